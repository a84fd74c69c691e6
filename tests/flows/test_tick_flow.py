"""The tick flow in-process, on the ephemeral Prefect API and a real SQLite database."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email import message_from_bytes
from pathlib import Path

import pytest
from prefect.client.schemas.sorting import ArtifactSort
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlalchemy import func, select
from sqlmodel import Session

from relance.email.transports import DeliveryError
from relance.plans import open_store
from relance.settings import Settings
from relance.store.repo import upsert_lead
from relance.store.tables import Outbox, StepLog
from tests.basis import professional

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

TEMPLATE = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Bonjour {{ lead.first_name }}, bienvenue.</mj-text>
<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""

WELCOME = """\
scenario: welcome
trigger:
  segment: {stage_in: [lead]}
reentry: never
steps:
  - id: hello
    send: hello
    subject: "Bienvenue {{ lead.first_name }}"
  - id: pause
    wait: 2d
  - id: done
    end: true
"""


@pytest.fixture
def settings(tmp_path: Path, prefect_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A scenarios folder with `welcome`, a SQLite file and the file transport, as RELANCE_* variables."""
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "scenarios" / "welcome.yaml").write_text(WELCOME, encoding="utf-8")
    (tmp_path / "templates" / "hello.mjml").write_text(TEMPLATE, encoding="utf-8")
    env = {
        "RELANCE_DATABASE_URL": f"sqlite:///{tmp_path / 'relance.db'}",
        "RELANCE_SCENARIOS_DIR": str(tmp_path / "scenarios"),
        "RELANCE_TEMPLATES_DIR": str(tmp_path / "templates"),
        "RELANCE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "RELANCE_TRANSPORT": "file",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def _leads(settings: Settings, n: int) -> list[str]:
    emails = [f"lead{i}@acme.example" for i in range(n)]
    engine = open_store(settings)
    with Session(engine) as session:
        for i, email in enumerate(emails):
            upsert_lead(session, email=email, now=NOW, first_name=f"Léa{i}", company="ACME", fields=professional())
        session.commit()
    engine.dispose()
    return emails


def _count(settings: Settings, statement) -> int:
    engine = open_store(settings)
    with Session(engine) as session:
        found = session.exec(statement).one()[0]
    engine.dispose()
    return found


def _artifact(key: str):
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )
    assert len(found) >= 1, f"no artifact {key}"
    return found[0]  # newest first


def test_a_tick_enrolls_the_segment_sends_in_batches_and_publishes_the_step_counts(settings: Settings) -> None:
    from relance.flows.tick import tick

    emails = _leads(settings, 5)

    state = tick(scenario="welcome", now=NOW.isoformat(), batch_size=2, return_state=True)

    assert state.is_completed()
    assert state.result() == {
        "scenario": "welcome", "entered": 5, "advanced": 5, "batches": 3, "sent": 5, "skipped": 0, "failed": 0, "leftovers": 0,
        "unknown": 0, "pending": 0, "cut_off": 0, "enrollments_failed": 0, "waiting": 5, "deferred": 0, "withheld": 0, "handed_off": 0,
    }
    sent = sorted(message_from_bytes(p.read_bytes())["To"] for p in settings.outbox_dir.glob("*.eml"))
    assert sent == emails
    assert _count(settings, select(func.count()).select_from(Outbox).where(Outbox.status == "sent")) == 5
    assert _count(settings, select(func.count()).select_from(StepLog).where(StepLog.step_id == "pause")) == 5

    artifact = _artifact("tick-welcome")
    assert artifact.type == "table" and artifact.flow_run_id == state.state_details.flow_run_id
    rows = json.loads(artifact.data)  # the API stores a table as its JSON text
    assert rows == [{"step": "hello", "now here": 0, "waiting": 0, "this tick": "sent 5"},
                    {"step": "pause", "now here": 5, "waiting": 5, "this tick": "waiting 5"},
                    {"step": "done", "now here": 0, "waiting": 0, "this tick": ""}]
    assert artifact.description.startswith("welcome, tick of 2026-03-02 09:00 UTC: 5 entered, 5 due, 3 batches, 5 sent, "
                                           "5 waiting")
    assert state.message == "5 entered, 5 sent, 5 waiting"  # what the run did, at a glance in the UI
    progress = _artifact("progress-welcome")  # more than one batch: the UI shows how far the tick has got
    assert progress.type == "progress" and progress.flow_run_id == state.state_details.flow_run_id
    assert float(progress.data) == 100.0 and progress.description == "welcome: 5 of 5 due enrollments advanced"


class RefusesOnceAfter:
    """Sends the first `n` messages; each later address is refused for now once (a retry may help), then sent."""

    def __init__(self, n: int) -> None:
        self.n, self.sent, self.refused = n, [], set()

    def send(self, email) -> str:
        if len(self.sent) >= self.n and email.to not in self.refused:
            self.refused.add(email.to)
            raise DeliveryError(f"{email.to}: 451 greylisted, try again later", retryable=True)
        self.sent.append(email.to)
        return f"sent-{len(self.sent)}"


def test_what_a_delivery_attempt_sent_before_its_retry_counts_in_the_tick(settings: Settings, monkeypatch) -> None:
    import relance.delivery
    import relance.tasks.deliver
    from relance.flows.tick import tick

    emails = _leads(settings, 5)
    transport = RefusesOnceAfter(2)  # the first attempt sends two and leaves three pending; its retry sends them
    monkeypatch.setattr(relance.delivery, "make_transport", lambda settings: transport)
    monkeypatch.setattr(relance.tasks.deliver.deliver_batch, "retry_delay_seconds", [0, 0, 0])

    figures = tick(scenario="welcome", now=NOW.isoformat())

    assert sorted(transport.sent) == emails
    assert _count(settings, select(func.count()).select_from(Outbox).where(Outbox.status == "sent")) == 5
    assert (figures["batches"], figures["sent"], figures["pending"], figures["leftovers"]) == (1, 5, 0, 0)


def test_a_second_tick_at_the_same_instant_sends_nothing_again(settings: Settings) -> None:
    from relance.flows.tick import tick

    _leads(settings, 3)
    tick(scenario="welcome", now=NOW.isoformat())

    again = tick(scenario="welcome", now=NOW.isoformat())

    assert again == {
        "scenario": "welcome", "entered": 0, "advanced": 0, "batches": 0, "sent": 0, "skipped": 0, "failed": 0, "leftovers": 0,
        "unknown": 0, "pending": 0, "cut_off": 0, "enrollments_failed": 0, "waiting": 3, "deferred": 0, "withheld": 0, "handed_off": 0,  # still waiting: the first tick put them there
    }
    assert len(list(settings.outbox_dir.glob("*.eml"))) == 3
    assert _artifact("tick-welcome").description.startswith(
        "welcome, tick of 2026-03-02 09:00 UTC: 0 entered, 0 due, 0 batches, 0 sent, 3 waiting")


def test_each_tick_links_to_the_scenarios_figures_as_relance_report_computes_them(settings: Settings) -> None:
    from relance.flows.tick import tick
    from relance.report import steps

    _leads(settings, 3)
    tick(scenario="welcome", now=NOW.isoformat())
    _leads(settings, 5)  # two more leads: the second tick enrolls them; the figures add both ticks up
    tick(scenario="welcome", now=NOW.isoformat())

    figures = _artifact("report-welcome")
    assert figures.type == "markdown"
    engine = open_store(settings)
    with Session(engine) as session:
        rows = steps(session, "welcome")["welcome"]
    engine.dispose()
    hello = next(r for r in rows if r["step"] == "hello")
    assert (hello["entered"], hello["sent"]) == (5, 5)
    assert "| hello | 5 | " + "█" * 20 + " | 5 (100.0 %) | - | 0 | 0 | 0 |" in figures.data  # entries, sent, ...
    assert "| pause | 5 | " + "█" * 20 + " | - | - | - | - | 0 |" in figures.data
    assert "| pause | began waiting 5 | - |" in figures.data
    assert _artifact("tick-welcome").description.endswith(
        "· scenario figures: [report-welcome](/artifacts/key/report-welcome)"
    )


def test_a_tick_of_an_unknown_scenario_fails_and_names_the_known_ones(settings: Settings) -> None:
    from relance.flows.tick import TickError, tick

    with pytest.raises(TickError, match=r"no scenario named 'welcom' in .*scenarios \(found: welcome\)"):
        tick(scenario="welcom", now=NOW.isoformat())


def test_the_tick_itself_says_what_a_dead_run_left_cut_off_mid_send(settings: Settings) -> None:
    """A worker killed mid-send left one row `sending`: the next tick (10 minutes on) makes it `unknown`,
    says so in its result, its log and its artifact, and does not send it again."""
    from datetime import timedelta

    from relance.flows.tick import tick
    from relance.store.tables import Lead

    _leads(settings, 1)
    engine = open_store(settings)
    with Session(engine) as session:
        lead = session.exec(select(Lead)).scalars().one()
        session.add(Outbox(lead_id=lead.id, template="hello", subject="Bonjour", to_address=lead.email, status="sending",
                           scenario="welcome", step_id="hello", created_at=NOW - timedelta(hours=1),
                           attempted_at=NOW - timedelta(minutes=30)))
        session.commit()
    engine.dispose()
    result = tick(scenario="welcome", now=NOW.isoformat())
    assert result["cut_off"] == 1
    assert _count(settings, select(func.count()).select_from(Outbox).where(Outbox.status == "unknown")) == 1
    assert "1 cut off mid-send by a run that died" in _artifact("tick-welcome").description
