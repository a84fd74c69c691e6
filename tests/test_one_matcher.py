"""One behaviour matcher: the simulator scores an event stream exactly as ingestion does, on both backends."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select
from sqlmodel import Session

from relance.engine.types import EventFact, LeadFacts
from relance.ingest import IncomingEvent, ingest_events
from relance.scenario.model import Scenario
from relance.scenario.plan import compile_scenario
from relance.scoring.config import ScoringConfig
from relance.simulation.rates import EngagementRates
from relance.simulation.simulator import _Simulation
from relance.store.tables import Lead
from relance.workspace import Workspace
from tests.units import committed

SCORING = ScoringConfig.model_validate({
    "behaviour": {
        "page_visited": {"/tarifs*": 10, "default": 1},
        "downloaded": {"livre*": 7, "default": 2},  # a mapping reads the page: for a download only `default` applies
        "demo_requested": 50,
    },
    "handoff": {"score_at_least": 100000, "grade_at_least": "A"},  # no hand-off: only the points are compared
})
PLAN = compile_scenario(Scenario.model_validate({"scenario": "points", "trigger": {"event": "never_sent"},
                                                 "steps": [{"id": "bye", "end": True}]}))
PAGES = st.sampled_from(["/tarifs", "/tarifs/pro", "/blog", "/", "/livre-blanc"])
EVENTS = st.one_of(
    st.tuples(st.just("page_visited"), PAGES.map(lambda p: {"path": p})),
    st.tuples(st.just("page_visited"), PAGES.map(lambda p: {"url": f"https://www.example.com{p}?utm=x"})),
    st.tuples(st.just("downloaded"), st.sampled_from(["livre-blanc", "etude"]).map(lambda a: {"asset": a})),
    st.tuples(st.just("demo_requested"), st.just({})),
)
_emails = count()


def _simulated_score(stream, start) -> int:
    run = _Simulation(PLAN, rates=EngagementRates(), scoring=SCORING, seed=1, end=start + timedelta(days=1))
    run.people, run.states, run.histories = [LeadFacts(id=1, email="x", stage="lead", score=0, grade="D")], [None], [[]]
    run.generations, run.suppressed = [0], [False]
    for minute, (kind, properties) in enumerate(stream):
        run.receive(0, EventFact(kind, start + timedelta(minutes=minute), dict(properties)), start + timedelta(minutes=minute))
    return run.people[0].score


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=st.lists(EVENTS, min_size=1, max_size=6))
def test_the_simulator_and_ingestion_score_the_same_events_the_same(engine, clock, stream):
    workspace, now, email = Workspace(scoring=SCORING), clock.now(), f"lead{next(_emails)}@acme.example"
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("form_submitted", email, now, {})], now=now)
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent(kind, email, now + timedelta(minutes=i), dict(p))
                                    for i, (kind, p) in enumerate(stream)], now=now + timedelta(hours=1))
    with Session(engine) as session:
        stored = session.exec(select(Lead.score).where(Lead.email == email)).scalar_one()
    assert _simulated_score(stream, now) == stored
