"""One broken scenario file (or a template only it sends) does not stop the others: they take events and tick,
it is reported, its leads wait where they are, and the tick after the fix moves them on. Real flows, both backends."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from relance.cli import app
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import open_store, sync_scenarios
from relance.settings import Settings, get_settings
from relance.store.tables import Enrollment, Lead, StepLog
from relance.workspace import load_workspace
from tests.units import committed
from tests.basis import PROFESSIONAL_PROPS

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

TEMPLATE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Bonjour {{ lead.first_name }}.</mj-text>
<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""
BROKEN_TEMPLATE = "<mjml><mj-body>{% if %}</mj-body></mjml>"

WELCOME = """\
scenario: welcome
trigger: {event: downloaded}
steps:
  - id: hello
    send: hello
    subject: "Bienvenue {{ lead.first_name }}"
  - id: pause
    wait: 2d
"""
NURTURE = """\
scenario: nurture
trigger: {event: downloaded, where: {asset: guide}}
steps:
  - id: guide
    send: guide
    subject: "Votre guide"
  - id: pause
    wait: 3d
"""


def break_it(folder: Path, how: str) -> None:
    """Break the nurture scenario: its file, or the template only it sends."""
    if how == "file":
        (folder / "scenarios" / "nurture.yaml").write_text(NURTURE.replace("wait: 3d", "wait: 3 jours"), encoding="utf-8")
    else:
        (folder / "templates" / "guide.mjml").write_text(BROKEN_TEMPLATE, encoding="utf-8")


def fix_it(folder: Path) -> None:
    (folder / "scenarios" / "nurture.yaml").write_text(NURTURE, encoding="utf-8")
    (folder / "templates" / "guide.mjml").write_text(TEMPLATE, encoding="utf-8")


@pytest.fixture
def folder(tmp_path: Path, db_url: str, prefect_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two scenarios (welcome, nurture), their templates, a database of each backend, as RELANCE_* variables."""
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "scenarios" / "welcome.yaml").write_text(WELCOME, encoding="utf-8")
    (tmp_path / "templates" / "hello.mjml").write_text(TEMPLATE, encoding="utf-8")
    fix_it(tmp_path)
    for name, value in {
        "RELANCE_DATABASE_URL": db_url, "RELANCE_SCENARIOS_DIR": str(tmp_path / "scenarios"),
        "RELANCE_TEMPLATES_DIR": str(tmp_path / "templates"), "RELANCE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "RELANCE_TRANSPORT": "file",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def downloaded(email: str, *, now: datetime, asset: str = "guide") -> None:
    """A new lead fills the form and downloads `asset`: what a tracked site sends."""
    settings = Settings()
    engine = open_store(settings)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=now, workspace=workspace)
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("form_submitted", email, now, {"first_name": "Léa", **PROFESSIONAL_PROPS}),
                                    IncomingEvent("downloaded", email, now, {"asset": asset})], now=now)
    engine.dispose()


def enrollments(scenario: str) -> list[tuple[str, str, str, datetime | None]]:
    """(email, status, step, due) of a scenario's enrollments."""
    engine = open_store(Settings())
    with Session(engine) as session:
        rows = session.execute(select(Lead.email, Enrollment.status, Enrollment.step_id, Enrollment.due_at)
                               .join(Lead, Lead.id == Enrollment.lead_id).where(Enrollment.scenario == scenario)
                               .order_by(Lead.email)).all()
        steps = session.execute(select(StepLog.step_id, StepLog.outcome).where(StepLog.scenario == scenario)).all()
    engine.dispose()
    return [(email, status, step, due.replace(tzinfo=timezone.utc) if due and due.tzinfo is None else due)
            for email, status, step, due in rows], sorted(steps)


def sent_to(folder: Path) -> list[tuple[str, str]]:
    return sorted((m["To"], m["Subject"]) for m in (message_from_bytes(p.read_bytes(), policy=policy.default) for p in (folder / "outbox").glob("*.eml")))


def artifact(key: str):
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC)
    assert found, f"no artifact {key}"
    return found[0]


@pytest.mark.parametrize("how", ["file", "template"])
def test_the_valid_scenario_runs_the_broken_ones_leads_wait_and_move_on_once_it_is_fixed(folder: Path, how: str) -> None:
    from relance.flows.tick import tick

    downloaded("avant@acme.example", now=NOW)  # both scenarios valid: registered, the lead enters both
    break_it(folder, how)
    later = NOW + timedelta(hours=1)

    downloaded("pendant@acme.example", now=later)  # an event while nurture is broken

    workspace = load_workspace(Settings())
    assert sorted(workspace.plans) == ["welcome"] and list(workspace.waiting) == ["nurture"]
    # the valid scenario enrolls; the broken one enrolls too, into its last valid version: nobody who should be in is lost
    assert [e[:3] for e in enrollments("welcome")[0]] == [("avant@acme.example", "active", "hello"),
                                                         ("pendant@acme.example", "active", "hello")]
    waiting_before = enrollments("nurture")
    assert waiting_before[0] == [("avant@acme.example", "active", "guide", NOW),
                                 ("pendant@acme.example", "active", "guide", later)]

    done = tick(scenario="welcome", now=later.isoformat(), return_state=True)
    assert done.is_completed() and done.result()["sent"] == 2
    assert sent_to(folder) == [("avant@acme.example", "Bienvenue Léa"), ("pendant@acme.example", "Bienvenue Léa")]

    refused = tick(scenario="nurture", now=later.isoformat(), return_state=True)
    assert refused.is_failed()
    assert refused.message.startswith("nurture: not run: ") and "has 1 problem(s); its 2 leads wait where they are" in refused.message
    assert enrollments("nurture") == waiting_before  # not advanced, not failed: untouched
    table = artifact("tick-nurture")
    assert table.flow_run_id == refused.state_details.flow_run_id
    assert json.loads(table.data) == [{"step": "guide", "now here": 2, "waiting": 0, "this tick": "not run: the file has problems"},
                                      {"step": "pause", "now here": 0, "waiting": 0, "this tick": "not run: the file has problems"}]
    problem = "nurture.yaml:8:5: step pause: bad duration '3 jours'" if how == "file" else \
        "nurture.yaml:5:5: step guide: template 'guide': Jinja syntax error at guide.mjml:1"
    assert problem in table.description

    fix_it(folder)
    moved = tick(scenario="nurture", now=later.isoformat())

    assert moved["advanced"] == 2 and moved["sent"] == 2
    assert [e[:3] for e in enrollments("nurture")[0]] == [("avant@acme.example", "active", "pause"),
                                                         ("pendant@acme.example", "active", "pause")]
    assert sent_to(folder).count(("pendant@acme.example", "Votre guide")) == 1


def test_an_event_for_a_broken_scenario_that_never_ran_enrolls_nobody_and_the_others_still_take_it(folder: Path) -> None:
    break_it(folder, "file")

    downloaded("lea@acme.example", now=NOW)

    assert [e[:3] for e in enrollments("welcome")[0]] == [("lea@acme.example", "active", "hello")]
    assert enrollments("nurture") == ([], [])  # no valid version was ever registered: nothing to enroll into


def relance(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_relance_tick_runs_the_valid_ones_warns_and_exits_3_and_a_named_broken_one_exits_1(folder: Path) -> None:
    downloaded("lea@acme.example", now=NOW)
    break_it(folder, "file")
    problem = f"{folder / 'scenarios' / 'nurture.yaml'}:8:5: step pause: bad duration '3 jours'"

    every = relance("tick", "--now", NOW.isoformat())

    assert every.exit_code == 3, every.output
    rows = {line.split()[0]: line.split()[1:] for line in every.stdout.splitlines() if line.strip().startswith(("welcome", "nurture"))}
    assert rows == {"welcome": ["1", "1", "1", "1", "0", "0", "1"], "nurture": ["not", "run"]}
    assert "warning: scenario nurture" in every.stderr and "does not run until it is fixed; its leads wait where they are" in every.stderr
    assert "Traceback" not in every.stderr, every.stderr
    assert enrollments("nurture")[0] == [("lea@acme.example", "active", "guide", NOW)]

    named = relance("tick", "nurture", "--now", NOW.isoformat())

    assert named.exit_code == 1
    assert problem in named.stderr
    assert named.stderr.strip().splitlines()[-1].startswith(f"error: scenario nurture ({folder / 'scenarios' / 'nurture.yaml'}) "
                                                            "has 1 problem(s): fix them")
    fix_it(folder)
    assert relance("tick", "--now", NOW.isoformat()).exit_code == 0
    assert enrollments("nurture")[0] == [("lea@acme.example", "active", "pause", NOW + timedelta(days=3))]


def test_event_and_preview_work_beside_a_broken_scenario_and_a_broken_scoring_yaml_stops_everything(folder: Path) -> None:
    break_it(folder, "file")
    relance("event", "form_submitted", "--lead", "lea@acme.example", "--prop", "first_name=Léa", "--prop", "basis=legitimate_interest")

    event = relance("event", "downloaded", "--lead", "lea@acme.example", "--prop", "asset=guide")
    shown = relance("preview", "hello")

    assert event.exit_code == 0 and "entered 1 scenario(s)" in event.stdout  # welcome
    assert "warning: scenario nurture" in event.stderr
    assert shown.exit_code == 0 and "Subject: Bienvenue Léa" in shown.stdout
    (folder / "scenarios" / "scoring.yaml").write_text("mql: {score_at_least: beaucoup}\n", encoding="utf-8")
    refused = relance("event", "downloaded", "--lead", "lea@acme.example", "--prop", "asset=guide", "--key", "k2")
    assert refused.exit_code == 1
    assert refused.stderr.strip().splitlines()[-1] == ("error: 1 problem(s) in scoring.yaml: every scenario depends on it, "
                                                       "so nothing runs until it is fixed; run `relance validate` after fixing them")


def test_an_enroll_step_into_a_broken_scenario_enters_its_last_valid_version(folder: Path) -> None:
    from relance.flows.tick import tick

    (folder / "scenarios" / "handover.yaml").write_text(
        "scenario: handover\ntrigger: {event: downloaded, where: {asset: handover}}\nsteps:\n  - {id: move, enroll: nurture}\n",
        encoding="utf-8")
    downloaded("lea@acme.example", now=NOW, asset="handover")  # registers nurture's valid version too
    break_it(folder, "file")

    assert tick(scenario="handover", now=NOW.isoformat())["advanced"] == 1

    assert [e[:3] for e in enrollments("handover")[0]] == [("lea@acme.example", "completed", "move")]
    assert enrollments("nurture")[0] == [("lea@acme.example", "active", "guide", NOW)]  # in, and waiting for the fix
