"""The score ledger explains every score, on both backends: after any mix of events (machine clicks taking back what a
click earned among them), a tick's `score` steps and decay, each lead's score is the sum of its ledger rows, and
each row's `score_after` the sum of the rows up to it."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import select
from sqlmodel import Session

from relance.advancing import advance_due
from relance.decay import decay_scores
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.settings import Settings
from relance.store.tables import Lead, ScoreChange
from relance.workspace import load_workspace
from tests.units import committed

ROOT = Path(__file__).resolve().parents[1]
LEADS = ["lea@acme.example", "karim@initech.example", "zoe@globex.example"]
LINKS = ["https://relance.example/a", "https://relance.example/b", "https://relance.example/c"]
PAGES = ["/blog", "/tarifs", "/produit"]
BOOST = """scenario: boost
trigger: {event: downloaded}
steps:
  - id: bump
    score: +7
  - id: pause
    wait: 1d
  - id: cool
    score: -3
  - id: done
    end: true
"""

# one event: (type, lead, link or page, email it is of, seconds after the clock)
EVENT = st.tuples(st.sampled_from(["page_visited", "email_opened", "email_clicked", "email_clicked", "downloaded",
                                   "demo_requested", "unsubscribed"]),
                  st.integers(0, len(LEADS) - 1), st.integers(0, 2), st.integers(0, 1), st.integers(0, 8))
ACTION = st.one_of(
    st.tuples(st.just("events"), st.lists(EVENT, min_size=1, max_size=12)),
    st.tuples(st.just("events again"), st.lists(EVENT, min_size=1, max_size=4)),  # seconds after the last batch
    st.tuples(st.just("tick"), st.integers(0, 30)),  # hours later, the tick advances what is due (`score` steps)
    st.tuples(st.just("decay"), st.integers(1, 10)),  # days later, decay (every 2 days here)
)


def _workspace(tmp_path: Path, db_url: str):
    scenarios = tmp_path / "scenarios"
    if not scenarios.exists():
        scenarios.mkdir()
        shipped = (ROOT / "scenarios" / "scoring.yaml").read_text(encoding="utf-8")
        (scenarios / "scoring.yaml").write_text(shipped.replace("decay: {every: 30d, percent: 25}",
                                                                "decay: {every: 2d, percent: 25}"), encoding="utf-8")
        (scenarios / "boost.yaml").write_text(BOOST, encoding="utf-8")
    settings = Settings(database_url=db_url, scenarios_dir=scenarios, templates_dir=ROOT / "templates" / "emails",
                        outbox_dir=tmp_path / "outbox", secret_key="k" * 32, public_url="https://t.relance.example")
    workspace = load_workspace(settings)
    assert "boost" in workspace.plans and workspace.scoring.decay.every == timedelta(days=2)
    return settings, workspace


def _incoming(event: tuple, now, keys) -> IncomingEvent:
    kind, lead, which, email, seconds = event
    at = now + timedelta(seconds=seconds)
    properties: dict = {}
    if kind == "page_visited":
        properties = {"path": PAGES[which]}
    elif kind in ("email_opened", "email_clicked"):
        properties = {"scenario": "boost", "step_id": f"mail-{email}"}
        if kind == "email_clicked":
            properties["link"] = LINKS[which]
    elif kind == "downloaded":
        properties = {"asset": "guide"}
    return IncomingEvent(kind, LEADS[lead], at, properties, f"k{next(keys)}")


def _explained(engine) -> None:
    """Each lead's score is the sum of its ledger rows, and each row's score_after the running sum."""
    with Session(engine) as session:
        scores = {lead.id: lead.score for lead in session.exec(select(Lead)).scalars()}
        rows = session.exec(select(ScoreChange).order_by(ScoreChange.id)).scalars().all()
    running = dict.fromkeys(scores, 0)
    for row in rows:
        running[row.lead_id] += row.points
        assert row.score_after == running[row.lead_id], (row.cause, row.points, row.score_after, running[row.lead_id])
    assert running == scores


def test_every_score_is_the_sum_of_its_ledger_rows(engine, db_url, clock, tmp_path):
    settings, workspace = _workspace(tmp_path, db_url)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    keys = itertools.count()
    profile = {"first_name": "Léa", "job_title": "Directrice marketing", "sector": "saas", "country": "FR"}
    committed(engine, ingest_events, workspace=workspace, now=clock.now(),
              events=[IncomingEvent("form_submitted", email, clock.now(), profile, f"form-{email}") for email in LEADS])
    click = {"scenario": "boost", "step_id": "mail-0"}  # a click that scores, then a scanner's second link 2 s later:
    for link, at in ((LINKS[0], clock.now()), (LINKS[1], clock.now() + timedelta(seconds=2))):  # points taken back
        committed(engine, ingest_events, workspace=workspace, now=clock.now() + timedelta(seconds=10),
                  events=[IncomingEvent("email_clicked", LEADS[0], at, {**click, "link": link}, f"click-{link}")])
    _explained(engine)
    with Session(engine) as session:
        taken_back = session.exec(select(ScoreChange.points).where(ScoreChange.cause == "email_clicked_by_machine")).all()
    assert [tuple(row) for row in taken_back] == [(-3,)]  # what the first click earned (scoring.yaml: 3)
    seen = {"machine": 0, "step": 0, "decay": 0}

    @hypothesis_settings(max_examples=25, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(ACTION, min_size=1, max_size=6))
    def run(actions):
        for kind, what in actions:
            if kind.startswith("events"):
                now = clock.advance(timedelta(minutes=0 if kind == "events again" else 1))
                events = [_incoming(event, now, keys) for event in what]
                committed(engine, ingest_events, workspace=workspace, events=events, now=now + timedelta(seconds=10))
            elif kind == "tick":
                now = clock.advance(timedelta(hours=what))
                while advance_due(engine, settings, scenario="boost", now=now, workspace=workspace).advanced:
                    pass
            else:
                committed(engine, decay_scores, scoring=workspace.scoring, now=clock.advance(timedelta(days=what)))
            _explained(engine)
        with Session(engine) as session:
            causes = set(session.exec(select(ScoreChange.cause)).scalars())
        for cause, door in (("email_clicked_by_machine", "machine"), ("step", "step"), ("decay", "decay")):
            seen[door] += cause in causes

    run()
    assert all(seen.values()), f"every door that changes a score was taken: {seen}"
