"""A hot lead's events, on both backends: a batch costs the same database work whatever the lead's history.

A lead past the hand-off score and grade but with no sales-ready action is checked for the hand-off at every
event; that check reads the lead's last rejection and sales-ready actions once per batch, never per event."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlmodel import Session

from relance.engine.types import EventFact
from relance.ingest import IncomingEvent, ingest_events
from relance.sales import sales_ready_since
from relance.scoring.config import ScoringConfig
from relance.scoring.rules import is_sales_ready
from relance.store.repo import record_events, upsert_lead
from relance.store.tables import Lead
from relance.workspace import Workspace
from tests.units import committed



def _scoring(*sales_ready) -> ScoringConfig:
    return ScoringConfig.model_validate({
        "behaviour": {"email_opened": 1, "page_visited": {"default": 1, "/tarifs*": 10}, "demo_requested": 50},
        "fit": {"job_title": {"(?i)directrice": 30}, "sector": {"saas": 20}},
        "grades": {"A": 70, "B": 50, "C": 30},
        "mql": {"score_at_least": 40, "grade_at_least": "C"},
        "handoff": {"score_at_least": 60, "grade_at_least": "B", "sales_ready": list(sales_ready)},
    })


SCORING = _scoring("demo_requested", {"visited": "/tarifs*"})
EMAIL = "lea@acme.example"


def _visits(n: int, at: datetime, prefix: str) -> list[IncomingEvent]:
    return [IncomingEvent("page_visited", EMAIL, at + timedelta(seconds=i), {"path": f"/blog/{i % 7}"}, f"{prefix}{i}")
            for i in range(n)]


def _statements(engine, workspace: Workspace, events: list[IncomingEvent], now: datetime) -> int:
    """How many SQL statements ingesting this batch sends to the database."""
    sent: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        sent.append(statement)

    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        assert committed(engine, ingest_events, workspace=workspace, events=events, now=now).stored == len(events)
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
    return len(sent)


def _lead(engine) -> Lead:
    with Session(engine) as session:
        return session.exec(select(Lead).where(Lead.email == EMAIL)).scalars().one()


def test_a_hot_leads_batch_costs_the_same_statements_whatever_its_size_and_history(engine, clock):
    workspace, now = Workspace(scoring=SCORING), clock.now()
    form = IncomingEvent("form_submitted", EMAIL, now, {"job_title": "Directrice marketing", "sector": "saas"}, "form")
    committed(engine, ingest_events, workspace=workspace, events=[form, *_visits(100, now, "warm")], now=now)
    assert (_lead(engine).score, _lead(engine).grade, _lead(engine).stage) == (100, "B", "mql")  # hot, nothing sales-ready

    small = _statements(engine, workspace, _visits(50, now + timedelta(hours=1), "a"), now)
    large = _statements(engine, workspace, _visits(500, now + timedelta(hours=2), "b"), now)
    committed(engine, ingest_events, workspace=workspace, events=_visits(2_000, now + timedelta(hours=3), "c"), now=now)
    small_again = _statements(engine, workspace, _visits(50, now + timedelta(hours=4), "d"), now)
    # constant per batch: neither the 10x larger batch nor the 20x longer history asks the database more
    assert small == large == small_again
    assert (_lead(engine).score, _lead(engine).stage) == (100 + 50 + 500 + 2_000 + 50, "mql")

    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("demo_requested", EMAIL, now + timedelta(hours=5), {}, "demo")], now=now)
    assert _lead(engine).stage == "sql-pending"  # the first sales-ready action hands it off, as before


def test_a_sales_ready_action_later_in_the_batch_hands_off_the_lead_that_turns_hot_earlier(engine, clock):
    workspace, now = Workspace(scoring=SCORING), clock.now()
    form = IncomingEvent("form_submitted", EMAIL, now, {"job_title": "Directrice marketing", "sector": "saas"}, "form")
    pricing = IncomingEvent("page_visited", EMAIL, now + timedelta(hours=1), {"url": "https://acme.example/tarifs?x=1"}, "p")
    committed(engine, ingest_events, workspace=workspace, events=[form, *_visits(300, now, "v"), pricing], now=now)
    assert _lead(engine).stage == "sql-pending"


@pytest.mark.parametrize("properties, ready", [
    pytest.param({"path": "/tarifs"}, True, id="path"),
    pytest.param({"path": "/tarifs/pro"}, True, id="path-below"),
    pytest.param({"url": "https://acme.example/tarifs?plan=pro"}, True, id="url-with-query"),
    pytest.param({"url": "/tar\nifs"}, True, id="url-with-a-newline-the-url-parser-drops"),
    pytest.param({"url": "\t /tarifs"}, True, id="url-with-leading-blanks"),
    pytest.param({"path": "/tarifs-été"}, True, id="non-ascii-path"),
    pytest.param({"path": "/blog", "url": "/tarifs"}, False, id="path-wins-over-url"),
    pytest.param({"url": "/blog?next=/tarifs"}, False, id="only-in-the-query"),
    pytest.param({"path": "/TARIFS"}, False, id="other-case"),
    pytest.param({"path": "/blog/tarifs"}, False, id="inside-another-path"),
    pytest.param({}, False, id="no-path"),
])
def test_sales_ready_since_finds_what_the_whole_history_holds(session, clock, properties, ready):
    """The database is asked for candidates only; the answer is the one reading every event of the lead gives."""
    lead = upsert_lead(session, email=EMAIL, now=clock.now())
    at = clock.now()
    rows = [dict(lead_id=lead.id, type="page_visited", occurred_at=at, properties=properties, idempotency_key="v",
                 received_at=at),
            dict(lead_id=lead.id, type="page_visited", occurred_at=at, properties={"path": "/blog"}, idempotency_key="b",
                 received_at=at)]
    record_events(session, rows)
    history = [EventFact(type=r["type"], occurred_at=r["occurred_at"], properties=r["properties"]) for r in rows]
    assert any(is_sales_ready(SCORING, e) for e in history) is ready  # the rule itself, on the whole history
    assert bool(sales_ready_since(session, SCORING, lead.id, None)) is ready


@pytest.mark.parametrize("glob, path, ready", [
    pytest.param("/pri[cx]e*", "/prixe/2026", True, id="set"),
    pytest.param("/pri[cx]e*", "/prie", False, id="set-unmatched"),
    pytest.param("*", "/anything", True, id="star-alone"),
    pytest.param("/mon_offre?", "/mon_offre1", True, id="underscore-and-question-mark"),
    pytest.param("/50%*", "/50%-off", True, id="percent"),
    pytest.param("/50%*", "/500-off", False, id="percent-is-no-wildcard"),
])
def test_sales_ready_since_reads_visited_globs_as_the_rule_does(session, clock, glob, path, ready):
    scoring = _scoring({"visited": glob})
    lead = upsert_lead(session, email=EMAIL, now=clock.now())
    record_events(session, [dict(lead_id=lead.id, type="page_visited", occurred_at=clock.now(), properties={"path": path},
                                 idempotency_key="v", received_at=clock.now())])
    assert is_sales_ready(scoring, EventFact("page_visited", clock.now(), {"path": path})) is ready
    assert bool(sales_ready_since(session, scoring, lead.id, None)) is ready


def test_sales_ready_since_counts_only_actions_after_the_rejection(session, clock):
    lead = upsert_lead(session, email=EMAIL, now=clock.now())
    rejected_at = clock.now()
    record_events(session, [
        dict(lead_id=lead.id, type="demo_requested", occurred_at=rejected_at - timedelta(days=1), properties={},
             idempotency_key="before", received_at=rejected_at),
        dict(lead_id=lead.id, type="demo_requested", occurred_at=rejected_at, properties={},
             idempotency_key="at", received_at=rejected_at),
    ])
    assert sales_ready_since(session, SCORING, lead.id, rejected_at) == []  # before or at the rejection: seen by sales
    record_events(session, [dict(lead_id=lead.id, type="demo_requested", occurred_at=rejected_at + timedelta(seconds=1),
                                 properties={}, idempotency_key="after", received_at=rejected_at)])
    assert [e.occurred_at for e in sales_ready_since(session, SCORING, lead.id, rejected_at)] == [rejected_at + timedelta(seconds=1)]


def test_only_the_first_open_of_each_email_scores_in_a_hot_leads_batch(engine, clock):
    workspace, now = Workspace(scoring=SCORING), clock.now()
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("form_submitted", EMAIL, now, {}, "form")], now=now)
    opens = [IncomingEvent("email_opened", EMAIL, now + timedelta(seconds=i), {"outbox_id": i % 5}, f"o{i}") for i in range(400)]
    committed(engine, ingest_events, workspace=workspace, events=opens[:200], now=now)
    committed(engine, ingest_events, workspace=workspace, events=opens[200:], now=now)
    assert _lead(engine).score == 5  # five emails, each opened first once (a list as outbox_id is refused at the door)
