"""Hand-off and sales answers on both backends: every transition and every refusal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from relance.leads import lead_summary
from relance.sales import Answer, SalesError, answer, open_handoff
from relance.scoring.config import ScoringConfig
from relance.store.repo import upsert_lead
from relance.store.tables import Handoff, Outbox
from tests.units import committed

SCORING = ScoringConfig.model_validate({
    "sla": {"contact_within": "48h", "target": "2h"},
    "later": {"default_delay": "90d", "scenario": "re-engagement"},
    "sales": {"owners": ["claire@example.com", "karim@example.com"], "manager": "direction@example.com"},
})


def _lead(session, clock, email="lea@acme.example", **profile):
    lead = upsert_lead(session, email=email, now=clock.now(), first_name="Léa", company="ACME", **profile)
    session.flush()
    return lead


def test_a_handoff_has_an_owner_round_robin_an_sla_and_a_notification(session, clock):
    leads = [_lead(session, clock, f"l{i}@acme.example") for i in range(3)]
    handoffs = [open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="test") for lead in leads]
    assert [h.owner for h in handoffs] == ["claire@example.com", "karim@example.com", "claire@example.com"]
    assert handoffs[0].deadline_at == clock.now() + timedelta(hours=48)
    assert handoffs[0].target_at == clock.now() + timedelta(hours=2)
    assert {l.stage for l in leads} == {"sql-pending"}
    notes = session.exec(select(Outbox).where(Outbox.template == "sales-handoff")).scalars().all()
    assert sorted(n.to_address for n in notes) == ["claire@example.com", "claire@example.com", "karim@example.com"]


def test_never_two_open_handoffs_for_one_lead(session, clock):
    lead = _lead(session, clock)
    assert open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="a") is not None
    assert open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="b") is None
    assert len(session.exec(select(Handoff)).scalars().all()) == 1


def test_accept_records_bant_and_moves_to_sql(session, clock, engine):
    lead = _lead(session, clock)
    open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="test")
    bant = {"budget": "40 k€", "authority": "CMO", "need": "scoring", "timing": "T3"}
    answer(session, email="LEA@acme.example", reply=Answer("accept", "claire@example.com", bant=bant), scoring=SCORING,
           now=clock.advance(timedelta(hours=1)))
    session.commit()
    summary = committed(engine, lead_summary, email="lea@acme.example", scoring=ScoringConfig())
    assert summary["stage"] == "sql"
    assert [(s["from"], s["to"], s["by"]) for s in summary["stage_history"]] == [("lead", "sql-pending", "test"), ("sql-pending", "sql", "claire@example.com")]
    assert summary["handoffs"][0]["bant"] == bant and summary["handoffs"][0]["status"] == "accepted"


def test_reject_needs_a_known_reason_and_sends_the_lead_back_to_nurturing(session, clock):
    lead = _lead(session, clock)
    open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="test")
    with pytest.raises(SalesError, match="reason among no-budget"):
        answer(session, email=lead.email, reply=Answer("reject", "karim@example.com", reason="meh"), scoring=SCORING, now=clock.now())
    handoff = answer(session, email=lead.email, reply=Answer("reject", "karim@example.com", reason="no-budget", note="gel des budgets"),
                     scoring=SCORING, now=clock.now())
    assert (handoff.status, handoff.reason, lead.stage) == ("rejected", "no-budget", "nurturing")


def test_later_defaults_to_the_configured_delay_and_refuses_past_dates(session, clock):
    lead = _lead(session, clock)
    open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="test")
    with pytest.raises(SalesError, match="not in the future"):
        answer(session, email=lead.email, reply=Answer("later", "claire@example.com", until=clock.now() - timedelta(days=1)),
               scoring=SCORING, now=clock.now())
    handoff = answer(session, email=lead.email, reply=Answer("later", "claire@example.com"), scoring=SCORING, now=clock.now())
    assert (handoff.status, handoff.later_until, lead.stage) == ("later", clock.now() + timedelta(days=90), "later")


def test_answers_to_a_closed_or_missing_handoff_are_refused(session, clock):
    lead = _lead(session, clock)
    with pytest.raises(SalesError, match="never handed to sales"):
        answer(session, email=lead.email, reply=Answer("accept", "x@example.com"), scoring=SCORING, now=clock.now())
    open_handoff(session, lead, scoring=SCORING, now=clock.now(), source="test")
    answer(session, email=lead.email, reply=Answer("accept", "claire@example.com"), scoring=SCORING, now=clock.now())
    with pytest.raises(SalesError, match="is closed: accepted"):
        answer(session, email=lead.email, reply=Answer("reject", "karim@example.com", reason="other"), scoring=SCORING, now=clock.now())
    with pytest.raises(SalesError, match="no lead"):
        answer(session, email="ghost@x.example", reply=Answer("accept", "x"), scoring=SCORING, now=clock.now())
    with pytest.raises(SalesError, match="unknown BANT"):
        lead2 = _lead(session, clock, "b@acme.example")
        open_handoff(session, lead2, scoring=SCORING, now=clock.now(), source="t")
        answer(session, email=lead2.email, reply=Answer("accept", "x", bant={"budjet": "1"}), scoring=SCORING, now=clock.now())
