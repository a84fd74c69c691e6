"""Every count a person reads after a tick (its log line, its `tick-NAME` artifact, its result, `relance report`)
against the database itself, after a mixed run over a week of virtual days: leads entering through events and
through a segment trigger, waits, a branch, sends, a suppressed lead, a webhook that fails, an event that wakes a
wait it does not satisfy. The expected figures are computed here from the raw rows (step log, enrollments,
outbox, events), never by relance's own counting code."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from relance.cockpit import tick_title
from relance.email.templates import TemplateLibrary
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import open_store, sync_scenarios
from relance.settings import Settings, get_settings
from relance.store.repo import upsert_lead
from relance.store.tables import Enrollment, Event, Outbox, StepLog
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.units import committed
from tests.basis import professional

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday
DAYS = 7

NURTURE = """\
scenario: nurture
trigger: {event: downloaded, where: {asset: guide}}
reentry: never
steps:
  - id: hello
    send: t-hello
    subject: "Votre guide, {{ lead.first_name }}"
  - id: pause
    wait: 2d
  - id: opened?
    if: {opened: hello}
    then: vip
    else: nudge
  - id: vip
    send: t-vip
    subject: "Pour vous"
    next: bye
  - id: nudge
    send: t-nudge
    subject: "Vous l'avez lu ?"
  - id: hook
    notify: {webhook: "http://localhost:9/hook"}  # refused when sent: localhost is this machine
  - id: wait-case
    wait_until: {event: downloaded, where: {asset: case}}
    timeout: 3d
    on_timeout: bye
  - id: thanks
    score: +5
  - id: bye
    end: true
"""

WELCOME = """\
scenario: welcome
trigger:
  segment: {tag: salon}
reentry: never
steps:
  - id: hi
    send: t-hello
    subject: "Bienvenue {{ lead.first_name }}"
  - id: rest
    wait: 1d
"""

TEMPLATE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Bonjour {{ lead.first_name }}.</mj-text>
<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""

PLANS = {"nurture": ("hello", "pause", "opened?", "vip", "nudge", "hook", "wait-case", "thanks", "bye"), "welcome": ("hi", "rest")}
SCENARIOS = ("nurture", "welcome")


def _at(scenario: str, day: int) -> datetime:
    """nurture ticks at 09:00, welcome at 09:30: each tick's own rows are told apart by their instant."""
    return T0 + timedelta(days=day, minutes=30 * SCENARIOS.index(scenario))


def _setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Settings:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "nurture.yaml").write_text(NURTURE, encoding="utf-8")
    (tmp_path / "scenarios" / "welcome.yaml").write_text(WELCOME, encoding="utf-8")
    shutil.copytree(ROOT / "templates" / "emails", tmp_path / "templates")  # layout and the hand-off email too
    for name in ("t-hello", "t-vip", "t-nudge"):
        (tmp_path / "templates" / f"{name}.mjml").write_text(TEMPLATE, encoding="utf-8")
    for name, value in {"RELANCE_DATABASE_URL": db_url, "RELANCE_SCENARIOS_DIR": str(tmp_path / "scenarios"),
                        "RELANCE_TEMPLATES_DIR": str(tmp_path / "templates"), "RELANCE_OUTBOX_DIR": str(tmp_path / "outbox"),
                        "RELANCE_TRANSPORT": "file"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return Settings()


def _event(kind: str, lead: int, at: datetime, **properties: Any) -> IncomingEvent:
    return IncomingEvent(kind, f"l{lead}@acme.example", at, properties, f"{kind}-{lead}-{at.isoformat()}")


def _what_happens(day: int) -> list[tuple[datetime, list[Any]]]:
    """(when, events) to ingest, or (when, [lead numbers]) of salon leads to create, on each day of the run."""
    t = T0 + timedelta(days=day)
    return {
        0: [(t - timedelta(hours=1), [_event("downloaded", n, t - timedelta(hours=1), asset="guide") for n in range(4, 10)]),
            (t + timedelta(hours=2), [_event("email_opened", 4, t + timedelta(hours=2), scenario="nurture", step_id="hello"),
                                      _event("email_opened", 5, t + timedelta(hours=2), scenario="nurture", step_id="hello"),
                                      _event("email_clicked", 4, t + timedelta(hours=3), scenario="nurture", step_id="hello"),
                                      _event("unsubscribed", 7, t + timedelta(hours=3))])],
        1: [(t - timedelta(hours=1), [_event("downloaded", n, t - timedelta(hours=1), asset="guide") for n in (0, 1)])],
        2: [(t - timedelta(hours=1), [10]),
            (t + timedelta(hours=2), [_event("downloaded", 6, t + timedelta(hours=2), asset="case"),  # meets wait-case
                                      _event("downloaded", 8, t + timedelta(hours=2), asset="other")])],  # wakes, unmet
    }.get(day, [])


def _leads(engine, numbers: list[int], at: datetime) -> None:
    with Session(engine) as session:
        for n in numbers:
            upsert_lead(session, email=f"l{n}@acme.example", now=at, first_name=f"Léa{n}", company="ACME", fields=professional(),
                        tags=["salon"] if n in (0, 1, 2, 3, 10) else [])
        session.commit()


# --------------------------------------------------------------------------- the database's own figures


def _rows(engine, table) -> list[Any]:
    with engine.connect() as connection:
        return connection.execute(select(table)).all()


def _due_now(engine, scenario: str, at: datetime) -> int:
    return sum(1 for e in _rows(engine, Enrollment.__table__)
               if e.scenario == scenario and e.status == "active" and e.due_at is not None and e.due_at <= at)


def _expected(engine, scenario: str, at: datetime, due_before: int) -> dict[str, Any]:
    """What the tick of `scenario` at `at` did and left, read from the raw rows."""
    log = [r for r in _rows(engine, StepLog.__table__) if r.scenario == scenario]
    first_step: dict[int, datetime] = {}
    for r in sorted(log, key=lambda r: r.id):
        if r.kind != "enter":
            first_step.setdefault(r.enrollment_id, r.at)
    outbox = _rows(engine, Outbox.__table__)
    mine = [o for o in outbox if o.scenario == scenario and o.created_at == at]
    enrollments = [e for e in _rows(engine, Enrollment.__table__) if e.scenario == scenario]
    active = [e for e in enrollments if e.status == "active"]
    sent = sum(1 for o in mine if o.status == "sent" and o.sent_at == at)
    due = due_before + sum(1 for r in log if r.kind == "enter" and r.at == at)  # plus who the segment enrolled now
    this_tick = Counter((r.step_id, r.outcome) for r in log if r.kind != "enter" and r.at == at)
    steps = list(PLANS[scenario]) + sorted({e.step_id for e in active} - set(PLANS[scenario]))
    return {
        "result": {
            "scenario": scenario, "entered": sum(1 for first in first_step.values() if first == at), "advanced": due,
            "batches": 1 if due else 0, "sent": sent, "skipped": sum(1 for o in mine if o.status == "skipped"),
            "failed": sum(1 for o in mine if o.status == "failed"), "unknown": sum(1 for o in mine if o.status == "unknown"),
            "pending": sum(1 for o in mine if o.status == "pending"),
            "leftovers": sum(1 for o in outbox if o.status == "sent" and o.sent_at == at) - sent,
            "cut_off": sum(1 for o in outbox if o.status == "unknown"),
            "enrollments_failed": sum(1 for e in enrollments if e.status == "failed" and e.left_at == at),
            "waiting": sum(1 for e in active if e.waiting is not None),
            "deferred": sum(1 for o in mine if o.held and o.status != "skipped"),  # held back by sending.yaml (none here)
            "withheld": sum(1 for o in mine if o.held and o.status == "skipped"),
            "handed_off": sum(1 for r in log if r.kind == "handoff" and r.outcome == "handed-off" and r.at == at),
        },
        "table": [{"step": step, "now here": sum(1 for e in active if e.step_id == step),
                   "waiting": sum(1 for e in active if e.step_id == step and e.waiting is not None),
                   "this tick": ", ".join(f"{o} {n}" for (s, o), n in sorted(this_tick.items()) if s == step)}
                  for step in steps],
        "traced": len({r.enrollment_id for r in log if r.kind != "enter" and r.at == at}),
    }


def _expected_report(engine, scenario: str) -> list[dict[str, Any]]:
    """`relance report`'s per-step figures for a scenario, from the raw rows."""
    log = [r for r in _rows(engine, StepLog.__table__) if r.scenario == scenario]
    enrollments = [e for e in _rows(engine, Enrollment.__table__) if e.scenario == scenario]
    outbox = [o for o in _rows(engine, Outbox.__table__) if o.scenario == scenario and o.enrollment_id is not None]
    events = [e for e in _rows(engine, Event.__table__) if (e.properties or {}).get("scenario") == scenario]
    steps = [s for s in PLANS[scenario] if any(r.step_id == s for r in log)]
    return [{
        "step": step,
        "reached": len({r.enrollment_id for r in log if r.step_id == step}),
        "entered": sum(1 for r in log if r.step_id == step and r.kind == "enter"),
        "now": sum(1 for e in enrollments if e.status == "active" and e.step_id == step),
        "waiting": sum(1 for e in enrollments if e.status == "active" and e.step_id == step and e.waiting is not None),
        "sent": sum(1 for o in outbox if o.step_id == step and o.status == "sent"),
        "delivered": len({e.lead_id for e in events if e.type == "email_delivered" and e.properties.get("step_id") == step}),
        "opened": len({e.lead_id for e in events if e.type == "email_opened" and e.properties.get("step_id") == step}),
        "clicked": len({e.lead_id for e in events if e.type == "email_clicked" and e.properties.get("step_id") == step}),
        "left": sum(1 for e in enrollments if e.status != "active" and e.step_id == step),
        "outcomes": dict(Counter(r.outcome for r in log if r.step_id == step)),
    } for step in steps]


# --------------------------------------------------------------------------- the run


def _mixed_run(settings: Settings, tick: Callable[[str, datetime], Any],
               check: Callable[[str, datetime, Any, dict[str, Any]], None]) -> dict[tuple[str, int], dict[str, Any]]:
    """Seven virtual days: each day's events and new leads, then a tick of each scenario, checked at once;
    what the database said after each tick, by (scenario, day)."""
    engine = open_store(settings)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=T0 - timedelta(days=1), workspace=workspace)
    _leads(engine, list(range(10)), T0 - timedelta(days=1))
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for day in range(DAYS):
        moments = _what_happens(day)
        for at, what in [m for m in moments if m[0] < T0 + timedelta(days=day)]:
            _ingest_or_create(engine, workspace, at, what)
        for scenario in SCENARIOS:
            at = _at(scenario, day)
            due_before = _due_now(engine, scenario, at)
            result = tick(scenario, at)
            expected = _expected(engine, scenario, at, due_before)
            check(scenario, at, result, expected)
            seen[(scenario, day)] = expected
        for at, what in [m for m in moments if m[0] >= T0 + timedelta(days=day)]:
            _ingest_or_create(engine, workspace, at, what)
    engine.dispose()
    return seen


def _ingest_or_create(engine, workspace, at: datetime, what) -> None:
    if what and isinstance(what[0], int):
        _leads(engine, what, at)
    else:
        committed(engine, ingest_events, workspace=workspace, events=what, now=at, channel="test")


def _the_run_was_mixed(seen: dict[tuple[str, int], dict[str, Any]]) -> None:
    """The figures this test checks went through every case worth checking (else it proves little)."""
    first = seen[("nurture", 0)]["result"]
    assert first["entered"] == 6 and first["sent"] == 6  # six leads that entered through their events, none by segment
    assert seen[("nurture", 1)]["result"]["waiting"] == 8  # six from day 0 and the two who came on day 1
    assert seen[("welcome", 0)]["result"]["entered"] == 4 and seen[("welcome", 2)]["result"]["entered"] == 1  # segment
    results = [s["result"] for s in seen.values()]
    assert sum(r["skipped"] for r in results) >= 1 and sum(r["failed"] for r in results) >= 4  # suppressed, webhooks
    assert any(s["result"]["advanced"] > s["traced"] for s in seen.values())  # woken by an event, went back to waiting
    assert {"step": "vip", "now here": 0, "waiting": 0, "this tick": "sent 2"} in seen[("nurture", 2)]["table"]  # the branch


NUMBER = re.compile(r"(\d+) ([a-z][a-z ]*?)(?=,|$| \()")


def _line_figures(line: str) -> dict[str, int]:
    """The figures of a tick's log line, by the words after them."""
    return {words: int(n) for n, words in NUMBER.findall(line.split(": ", 1)[1])}


def _line_matches(line: str, figures: dict[str, Any]) -> None:
    found = _line_figures(line)
    expected = {"entered": figures["entered"], "due": figures["advanced"], "sent": figures["sent"],
                "waiting": figures["waiting"], ("batch" if figures["batches"] == 1 else "batches"): figures["batches"]}
    optional = {"skipped": figures["skipped"], "failed": figures["failed"], "with an unknown outcome": figures["unknown"],
                "leads left on an error": figures["enrollments_failed"], "lead left on an error": figures["enrollments_failed"],
                "cut off mid-send by a run that died": figures["cut_off"], "handed off to sales": figures["handed_off"],
                "other pending messages sent": figures["leftovers"], "other pending message sent": figures["leftovers"]}
    expected.update({words: n for words, n in optional.items() if n and words in found})
    assert found == expected, line  # every number in the line is one of these, and right


def test_the_tick_flow_says_what_the_database_says_after_a_mixed_run(tmp_path, monkeypatch, prefect_home) -> None:
    from relance.flows.tick import tick as tick_flow
    from relance.cli import app
    from relance.tasks.artifacts import artifact_key

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    settings = _setup(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'relance.db'}")
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.INFO:  # the warnings before it start with the scenario's name too
                lines.append(record.getMessage())

    handler = Lines(level=logging.INFO)
    logging.getLogger("prefect.flow_runs").addHandler(handler)

    def tick(scenario: str, at: datetime) -> dict:
        lines.clear()
        state = tick_flow(scenario=scenario, now=at.isoformat(), return_state=True)
        return {"state": state, "result": state.result(), "line": [l for l in lines if l.startswith(f"{scenario}: ")][-1]}

    def check(scenario: str, at: datetime, got: dict, expected: dict) -> None:
        assert got["result"] == expected["result"], (scenario, at)
        _line_matches(got["line"], expected["result"])
        with get_client(sync_client=True) as client:
            artifact = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(scenario)])),
                                             sort=ArtifactSort.CREATED_DESC, limit=1)[0]
        assert artifact.flow_run_id == got["state"].state_details.flow_run_id
        assert json.loads(artifact.data) == expected["table"], (scenario, at)
        assert artifact.description.startswith(tick_title(scenario, at, got["line"]) + " · scenario figures: ")

    try:
        seen = _mixed_run(settings, tick, check)
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(handler)
    _the_run_was_mixed(seen)
    engine = open_store(settings)
    for scenario in SCENARIOS:
        shown = CliRunner().invoke(app, ["report", "--json", "--scenario", scenario])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["scenarios"][scenario] == _expected_report(engine, scenario)
    engine.dispose()


def test_a_tick_and_relance_report_say_what_the_database_says_on_both_backends(tmp_path, monkeypatch, db_url) -> None:
    from relance.cli import app

    settings = _setup(tmp_path, monkeypatch, db_url)
    engine = open_store(settings)
    workspace = load_workspace(settings)

    def tick(scenario: str, at: datetime):
        return run_tick_inline(engine, settings, scenario=scenario, now=at, workspace=workspace, templates=TemplateLibrary(settings.templates_dir))

    def check(scenario: str, at: datetime, report, expected: dict) -> None:
        assert report.as_dict() == expected["result"], (scenario, at)
        table = {row["step"]: row for row in expected["table"]}
        assert {step: here for step, here in report.standing.items() if here != (0, 0)} == {
            step: (row["now here"], row["waiting"]) for step, row in table.items() if row["now here"]}
        assert report.counts == Counter({(step, o): int(n) for step, row in table.items() if row["this tick"]
                                         for o, n in (part.rsplit(" ", 1) for part in row["this tick"].split(", "))})

    seen = _mixed_run(settings, tick, check)
    _the_run_was_mixed(seen)
    for scenario in SCENARIOS:
        shown = CliRunner().invoke(app, ["report", "--json", "--scenario", scenario])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["scenarios"][scenario] == _expected_report(engine, scenario)
    engine.dispose()
