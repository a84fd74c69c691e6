"""Events in, on both backends: stored once, scored, MQL crossed, leads created by forms only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import Session

from relance.ingest import IncomingEvent, UnknownLead, ingest_events
from relance.scoring.config import ScoringConfig
from relance.store.repo import upsert_lead
from relance.store.tables import Event, Lead
from relance.workspace import Workspace
from tests.units import committed

SCORING = ScoringConfig.model_validate({
    "behaviour": {"email_opened": 1, "page_visited": {"default": 1, "/tarifs*": 10}, "demo_requested": 50},
    "fit": {"job_title": {"(?i)directrice": 30}, "sector": {"saas": 20}},
    "grades": {"A": 70, "B": 50, "C": 30},
    "mql": {"score_at_least": 40, "grade_at_least": "C"},
})


def _lead(engine, email):
    with Session(engine) as session:
        return session.exec(select(Lead).where(Lead.email == email)).scalars().one()


def test_a_form_creates_the_lead_with_its_grade_and_points_add_up_to_mql(engine, clock):
    workspace = Workspace(scoring=SCORING)
    now = clock.now()
    form = IncomingEvent("form_submitted", "Lea@ACME.example", now, {"job_title": "Directrice marketing", "sector": "saas", "source": "webinar"})
    committed(engine, ingest_events, workspace=workspace, events=[form], now=now)
    lead = _lead(engine, "lea@acme.example")
    assert (lead.fit, lead.grade, lead.source) == (50, "B", "webinar")

    opens = [IncomingEvent("email_opened", "lea@acme.example", now + timedelta(minutes=i), {"outbox_id": 1}) for i in range(3)]
    visits = [IncomingEvent("page_visited", "lea@acme.example", now, {"path": p}) for p in ("/tarifs", "/blog", "/tarifs/pro")]
    committed(engine, ingest_events, workspace=workspace, events=opens + visits, now=now)
    lead = _lead(engine, "lea@acme.example")
    assert lead.score == 1 + 10 + 1 + 10 and lead.stage == "lead"  # the first open only

    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("demo_requested", "lea@acme.example", now, {})], now=now)
    # 72 crosses the MQL line and, grade B with no sales-ready list, the default hand-off point too
    assert (_lead(engine, "lea@acme.example").score, _lead(engine, "lea@acme.example").stage) == (72, "sql-pending")


def test_a_replayed_event_is_stored_and_scored_once(engine, clock):
    workspace = Workspace(scoring=SCORING)
    with Session(engine) as session:
        upsert_lead(session, email="karim@initech.example", now=clock.now())
        session.commit()
    visit = IncomingEvent("page_visited", "karim@initech.example", clock.now(), {"path": "/tarifs"}, "visit-1")
    first = committed(engine, ingest_events, workspace=workspace, events=[visit], now=clock.now())
    again = committed(engine, ingest_events, workspace=workspace, events=[visit, visit], now=clock.now())
    assert (first.stored, again.stored, again.duplicates) == (1, 0, 2)
    assert _lead(engine, "karim@initech.example").score == 10
    with Session(engine) as session:
        assert len(session.exec(select(Event)).scalars().all()) == 1


def test_an_event_for_an_unknown_lead_is_refused_and_nothing_is_half_written(engine, clock):
    workspace = Workspace(scoring=SCORING)
    with Session(engine) as session:
        upsert_lead(session, email="known@acme.example", now=clock.now())
        session.commit()
    batch = [
        IncomingEvent("page_visited", "known@acme.example", clock.now(), {"path": "/tarifs"}),
        IncomingEvent("page_visited", "ghost@nowhere.example", clock.now(), {"path": "/tarifs"}),
    ]
    with pytest.raises(UnknownLead, match="ghost@nowhere.example"):
        committed(engine, ingest_events, workspace=workspace, events=batch, now=clock.now())
    assert _lead(engine, "known@acme.example").score == 0
    with Session(engine) as session:
        assert session.exec(select(Event)).scalars().all() == []
