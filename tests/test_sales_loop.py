"""The sales loop on both backends: rejection cool-off, "later" leads turning hot, team routing,
reassignment, the list of open hand-offs and the 2 h target alert."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import Session

from recording import RecordingTransport  # tests/recording.py
from relance.email.templates import TemplateLibrary
from relance.housekeeping import run_reengage
from relance.ingest import IncomingEvent, ingest_events
from relance.leads import lead_summary
from relance.plans import sync_scenarios
from relance.report import sla
from relance.sales import Answer, SalesError, answer, flag_sla, open_handoff
from relance.scoring.config import ScoringConfig
from relance.settings import Settings
from relance.store.repo import upsert_lead
from relance.store.tables import Event, Handoff, Lead, Outbox, StepLog
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from tests.units import committed

ROOT = Path(__file__).resolve().parents[1]
ZOE = "zoe@acme.example"
# grade A with the shipped scoring.yaml: director 30 + revenue 30 + saas 20 + FR 10
HOT_PROFILE = dict(first_name="Zoé", last_name="Roux", company="ACME", job_title="Directrice marketing", sector="saas",
                   company_revenue=20_000_000, country="FR")
HOT_AGAIN = "hand-back.yaml"


@pytest.fixture
def world(engine, clock, tmp_path, db_url):
    """The shipped scenarios plus one that hands a lead to sales when it attends a webinar; the workspace over them."""
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    (tmp_path / "scenarios" / HOT_AGAIN).write_text(
        "scenario: hand-back\ntrigger: {event: webinar_attended}\nreentry: always\nsteps:\n"
        "  - id: to-sales\n    handoff: sales\n", encoding="utf-8")
    settings = Settings(database_url=db_url, scenarios_dir=tmp_path / "scenarios", templates_dir=ROOT / "templates" / "emails",
                        outbox_dir=tmp_path / "outbox", secret_key="k" * 32)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    return engine, settings, workspace


def _event(world, clock, type_, email=ZOE, **properties):
    engine, _, workspace = world
    return committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent(type_, email, clock.now(), properties)], now=clock.now())


def _handoffs(engine, email=ZOE):
    with Session(engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == email)).scalars().one()
        return [(h.status, h.owner) for h in session.exec(select(Handoff).where(Handoff.lead_id == lead.id).order_by(Handoff.id)).scalars()]


def _answer(world, clock, verdict, email=ZOE, **kw):
    engine, _, workspace = world
    with Session(engine) as session:
        handoff = answer(session, email=email, reply=Answer(verdict, "claire@example.com", **kw), scoring=workspace.scoring, now=clock.now())
        session.commit()
        return handoff.id


def _graded(world, clock, email=ZOE, **profile):
    """A lead graded by the shipped scoring.yaml (through a form, as the website would bring it)."""
    _event(world, clock, "form_submitted", email=email, **(profile or HOT_PROFILE))


# --------------------------------------------------------------------------- 1. rejection cool-off


def test_a_rejected_lead_cools_off_and_only_a_sales_ready_action_after_the_rejection_hands_it_back(world, clock):
    engine, _, _ = world
    _graded(world, clock)
    _event(world, clock, "demo_requested")
    assert _handoffs(engine) == [("open", "claire@example.com")]
    _answer(world, clock, "reject", reason="no-budget", note="back in Q3")

    clock.advance(timedelta(minutes=1))
    _event(world, clock, "page_visited", path="/blog/crm")  # the old demo request no longer counts
    assert _handoffs(engine) == [("rejected", "claire@example.com")]
    clock.advance(timedelta(days=31))
    _event(world, clock, "page_visited", path="/blog/scoring")  # cool-off over, but no new sales-ready action
    assert _handoffs(engine) == [("rejected", "claire@example.com")]
    _event(world, clock, "demo_requested")  # a new one, after the cool-off: back to sales
    assert _handoffs(engine) == [("rejected", "claire@example.com"), ("open", "karim@example.com")]

    with Session(engine) as session:
        assert sla(session, now=clock.now())["rejection_reasons"] == {"no-budget": 1}  # the reason, not the note
    summary = committed(engine, lead_summary, email=ZOE, scoring=ScoringConfig())
    rejected = summary["handoffs"][1]
    assert (rejected["reason"], rejected["note"]) == ("no-budget", "back in Q3")
    assert any("no-budget (back in Q3)" in change["reason"] for change in summary["stage_history"])


def test_a_sales_ready_action_during_the_cool_off_hands_nothing_off(world, clock):
    engine, _, _ = world
    _graded(world, clock)
    _event(world, clock, "demo_requested")
    _answer(world, clock, "reject", reason="bad-timing")
    clock.advance(timedelta(days=29))
    _event(world, clock, "page_visited", path="/tarifs")
    _event(world, clock, "demo_requested")
    assert _handoffs(engine) == [("rejected", "claire@example.com")]
    with Session(engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == ZOE)).scalars().one()
        assert lead.score >= 110  # decided: the behaviour history is real, the score stays


def test_the_cool_off_lasts_what_scoring_yaml_says():
    assert ScoringConfig().handoff.after_rejection == timedelta(days=30)
    config = ScoringConfig.model_validate({"handoff": {"score_at_least": 60, "after_rejection": "7d"}})
    assert config.handoff.after_rejection == timedelta(days=7)
    with pytest.raises(ValidationError, match="after_rejection"):
        ScoringConfig.model_validate({"handoff": {"after_rejection": "a month"}})


def test_a_handoff_step_during_the_cool_off_goes_on_and_its_log_says_why(world, clock):
    engine, settings, workspace = world
    _graded(world, clock)
    _event(world, clock, "demo_requested")
    _answer(world, clock, "reject", reason="no-budget", note="back in Q3")
    clock.advance(timedelta(days=1))
    _event(world, clock, "webinar_attended")
    run_tick_inline(engine, settings, scenario="hand-back", now=clock.now(), workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    with Session(engine) as session:
        log = session.exec(select(StepLog).where(StepLog.scenario == "hand-back", StepLog.kind == "handoff")).scalars().one()
    assert log.outcome == "cooling-off"
    assert log.detail["why"] == "cooling off until 2026-02-04 after rejection (no-budget)"
    assert _handoffs(engine) == [("rejected", "claire@example.com")]

    clock.advance(timedelta(days=30))  # over: the step needs a sales-ready action after the rejection
    _event(world, clock, "webinar_attended")
    run_tick_inline(engine, settings, scenario="hand-back", now=clock.now(), workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    assert _handoffs(engine) == [("rejected", "claire@example.com")]
    _event(world, clock, "demo_requested")  # ingestion hands it off (the action is new)
    assert _handoffs(engine)[-1][0] == "open"


# --------------------------------------------------------------------------- 2. "later" leads turning hot


def test_a_later_lead_who_turns_hot_goes_back_to_the_same_owner_at_once(world, clock):
    engine, _, workspace = world
    _graded(world, clock, email="paul@globex.example", first_name="Paul", company="Globex")  # grade D: no threshold here
    with Session(engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == "paul@globex.example")).scalars().one()
        open_handoff(session, lead, scoring=workspace.scoring, now=clock.now(), source="test", owner="karim@example.com")
        session.commit()
    _answer(world, clock, "later", email="paul@globex.example", until=datetime(2026, 9, 1, tzinfo=timezone.utc))
    clock.advance(timedelta(days=3))
    _event(world, clock, "page_visited", email="paul@globex.example", path="/blog")  # not sales-ready: nothing
    assert _handoffs(engine, "paul@globex.example") == [("later", "karim@example.com")]

    _event(world, clock, "demo_requested", email="paul@globex.example")
    assert _handoffs(engine, "paul@globex.example") == [("later", "karim@example.com"), ("open", "karim@example.com")]
    with Session(engine) as session:
        old, new = session.exec(select(Handoff).order_by(Handoff.id)).scalars().all()
        assert old.reengaged_at == clock.now()
        assert "later until 2026-09-01" in new.source
        lead = session.get(Lead, new.lead_id)
        assert lead.stage == "sql-pending"
        [note] = session.exec(select(Outbox).where(Outbox.step_id == f"hot-again:{new.id}:karim@example.com")).scalars().all()
        assert note.subject.startswith("Lead en attente redevenu chaud")
    transport = RecordingTransport()  # the next tick sends it, rendered
    run_tick_inline(engine, world[1], scenario="hand-back", now=clock.now(), workspace=workspace, transport=transport, templates=TemplateLibrary(world[1].templates_dir))
    [sent] = [m for m in transport.sent if m.to == "karim@example.com" and "redevenu chaud" in m.subject]
    assert "Paul" in sent.subject and "Il vous revient directement" in sent.text
    assert "vous l'aviez mis en attente (jusqu'au 01/09/2026, signal : demo_requested)" in " ".join(sent.text.split())
    assert "event:" not in sent.text  # no internal wording in the sentence
    clock.advance(timedelta(days=300))
    assert committed(engine, run_reengage, workspace=workspace, now=clock.now()) == 0  # re-engaged already: not enrolled again


# --------------------------------------------------------------------------- 3. team routing

TEAMS = {
    "sla": {"contact_within": "48h", "target": "2h"},
    "sales": {
        "owners": ["karim@example.com", "kevin@example.com"], "manager": "direction@example.com",
        "teams": {
            "france": {"owners": ["claire@example.com", "camille@example.com"], "where": {"country": ["FR", "BE", "CH"]}},
            "saas": {"owners": ["sam@example.com"], "where": {"sector": "saas", "company_revenue": {"at_least": 1_000_000}}},
            "enterprise": {"owners": ["eve@example.com"]},
        },
    },
}


def _plain_lead(session, clock, email, **profile):
    lead = upsert_lead(session, email=email, now=clock.now(), **profile)
    session.flush()
    return lead


def test_leads_go_to_the_first_matching_team_round_robin_inside_it_else_to_the_plain_owners(session, clock):
    scoring = ScoringConfig.model_validate(TEAMS)
    profiles = [
        ("a@x.example", dict(country="FR", sector="saas", company_revenue=5_000_000)),  # france first, in file order
        ("b@x.example", dict(country="be")),
        ("c@x.example", dict(country="CH")),
        ("d@x.example", dict(country="DE", sector="SaaS", company_revenue=2_000_000)),
        ("e@x.example", dict(country="DE", sector="saas", company_revenue=10)),  # too small for saas
        ("f@x.example", dict(country="US")),
        ("g@x.example", dict(country="US")),
    ]
    handoffs = [open_handoff(session, _plain_lead(session, clock, email, **p), scoring=scoring, now=clock.now(), source="t")
                for email, p in profiles]
    assert [(h.team, h.owner) for h in handoffs] == [
        ("france", "claire@example.com"), ("france", "camille@example.com"), ("france", "claire@example.com"),
        ("saas", "sam@example.com"), (None, "karim@example.com"), (None, "kevin@example.com"), (None, "karim@example.com"),
    ]
    named = open_handoff(session, _plain_lead(session, clock, "h@x.example", country="FR"), scoring=scoring, now=clock.now(),
                         source="t", team="enterprise")
    assert (named.team, named.owner) == ("enterprise", "eve@example.com")  # a step's team wins over `where`


def test_teams_in_scoring_yaml_are_checked():
    with pytest.raises(ValidationError, match="a team needs at least one owner"):
        ScoringConfig.model_validate({"sales": {"teams": {"france": {"owners": [], "where": {"country": "FR"}}}}})
    with pytest.raises(ValidationError, match="takes a floor, like"):
        ScoringConfig.model_validate({"sales": {"teams": {"big": {"owners": ["a@x.example"], "where": {"company_revenue": 5}}}}})
    with pytest.raises(ValidationError, match="job"):
        ScoringConfig.model_validate({"sales": {"teams": {"x": {"owners": ["a@x.example"], "where": {"job": "CEO"}}}}})
    with pytest.raises(ValidationError, match="alert_on_target"):
        ScoringConfig.model_validate({"sla": {"contact_within": "48h", "target": "2h", "alert_on_target": "yes please"}})


def test_a_scenario_handoff_step_routes_to_its_team(world, clock):
    engine, settings, _ = world
    scoring = settings.scenarios_dir / "scoring.yaml"
    text = scoring.read_text(encoding="utf-8").replace(  # no sales-ready action needed here
        'sales_ready: [demo_requested, trial_started, {visited: "/tarifs*"}]', "sales_ready: []")
    scoring.write_text(text.replace(
        "sales: {owners: [claire@example.com, karim@example.com], manager: direction.ventes@example.com}",
        "sales:\n  owners: [claire@example.com, karim@example.com]\n  manager: direction.ventes@example.com\n"
        "  teams:\n    enterprise: {owners: [eve@example.com]}\n"), encoding="utf-8")
    (settings.scenarios_dir / HOT_AGAIN).write_text(
        "scenario: hand-back\ntrigger: {event: webinar_attended}\nsteps:\n"
        "  - id: bump\n    score: +60\n  - id: to-sales\n    handoff: sales\n    team: enterprise\n", encoding="utf-8")
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    world = (engine, settings, workspace)
    _graded(world, clock)
    _event(world, clock, "webinar_attended")
    run_tick_inline(engine, settings, scenario="hand-back", now=clock.now(), workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    with Session(engine) as session:
        [handoff] = session.exec(select(Handoff)).scalars().all()
    assert (handoff.team, handoff.owner, handoff.source) == ("enterprise", "eve@example.com", "hand-back/to-sales")


# --------------------------------------------------------------------------- reassign, list, 2 h target alert


def test_reassign_changes_the_owner_tells_the_new_one_and_lead_show_keeps_the_trace(session, engine, clock):
    from relance.sales import reassign

    scoring = ScoringConfig.model_validate(TEAMS)
    lead = _plain_lead(session, clock, "lea@acme.example", first_name="Léa", country="US")
    open_handoff(session, lead, scoring=scoring, now=clock.now(), source="t")
    session.commit()
    handoff = reassign(session, email="LEA@acme.example", to="sam@example.com", by="direction@example.com",
                       now=clock.advance(timedelta(hours=1)))
    session.commit()
    assert handoff.owner == "sam@example.com"
    notes = session.exec(select(Outbox).where(Outbox.template == "sales-handoff").order_by(Outbox.id)).scalars().all()
    assert [n.to_address for n in notes] == ["karim@example.com", "sam@example.com"]
    [event] = session.exec(select(Event).where(Event.type == "handoff_reassigned")).scalars().all()
    assert event.properties == {"handoff_id": handoff.id, "from": "karim@example.com", "to": "sam@example.com",
                                "by": "direction@example.com"}
    shown = committed(engine, lead_summary, email="lea@acme.example", scoring=ScoringConfig())["handoffs"][0]
    assert shown["owner"] == "sam@example.com"
    assert shown["reassignments"] == [{"at": clock.now(), "from": "karim@example.com", "to": "sam@example.com",
                                       "by": "direction@example.com"}]


def test_reassign_refusals_say_what_is_wrong_in_one_sentence(session, clock):
    from relance.sales import reassign

    scoring = ScoringConfig.model_validate(TEAMS)
    lead = _plain_lead(session, clock, "lea@acme.example")
    with pytest.raises(SalesError, match="^lea@acme.example has no open hand-off to reassign$"):
        reassign(session, email=lead.email, to="sam@example.com", by="x", now=clock.now())
    with pytest.raises(SalesError, match="no lead with email 'ghost@x.example'"):
        reassign(session, email="ghost@x.example", to="sam@example.com", by="x", now=clock.now())
    open_handoff(session, lead, scoring=scoring, now=clock.now(), source="t")
    with pytest.raises(SalesError, match="the new owner must be an email address"):
        reassign(session, email=lead.email, to="sam", by="x", now=clock.now())
    with pytest.raises(SalesError, match="already owned by karim@example.com"):
        reassign(session, email=lead.email, to="karim@example.com", by="x", now=clock.now())


def test_open_handoffs_are_listed_by_deadline_with_the_time_left(session, clock):
    from relance.sales import open_handoffs

    scoring = ScoringConfig.model_validate(TEAMS)
    start = clock.now()
    for i, email in enumerate(["old@x.example", "new@x.example"]):
        open_handoff(session, _plain_lead(session, clock, email, company=f"C{i}", country="US"), scoring=scoring,
                     now=clock.advance(timedelta(hours=i)), source="t")
    accepted = _plain_lead(session, clock, "done@x.example")
    open_handoff(session, accepted, scoring=scoring, now=start, source="t")
    answer(session, email="done@x.example", reply=Answer("accept", "x"), scoring=scoring, now=clock.now())
    later = start + timedelta(hours=48, minutes=30)
    rows = open_handoffs(session, now=later)
    assert [(r["email"], r["company"], r["owner"]) for r in rows] == [
        ("old@x.example", "C0", "karim@example.com"), ("new@x.example", "C1", "kevin@example.com")]
    assert rows[0]["deadline_left_minutes"] == -30 and rows[0]["overdue"] is True
    assert rows[1]["deadline_left_minutes"] == 30 and rows[1]["overdue"] is False
    assert rows[1]["target_left_minutes"] == -(48 * 60 + 30 - 60 - 120)
    assert rows[0]["age_minutes"] == 48 * 60 + 30
    assert [r["email"] for r in open_handoffs(session, now=later, overdue=True)] == ["old@x.example"]
    assert [r["email"] for r in open_handoffs(session, now=later, owner="KEVIN@example.com")] == ["new@x.example"]


@pytest.mark.parametrize("alert", [True, False])
def test_a_missed_2h_target_alerts_the_owner_once_when_scoring_yaml_asks(session, clock, alert):
    scoring = ScoringConfig.model_validate({**TEAMS, "sla": {"contact_within": "48h", "target": "2h", "alert_on_target": alert}})
    lead = _plain_lead(session, clock, "lea@acme.example", first_name="Léa", country="US")
    handoff = open_handoff(session, lead, scoring=scoring, now=clock.now(), source="t")
    assert flag_sla(session, scoring=scoring, now=clock.advance(timedelta(hours=1))).target_missed == 0
    assert flag_sla(session, scoring=scoring, now=clock.advance(timedelta(hours=2))).target_missed == 1
    flag_sla(session, scoring=scoring, now=clock.advance(timedelta(hours=1)))
    alerts = session.exec(select(Outbox).where(Outbox.step_id.like("target:%"))).scalars().all()
    assert [(a.to_address, a.step_id) for a in alerts] == ([("karim@example.com", f"target:{handoff.id}:karim@example.com")] if alert else [])
    if alert:
        assert alerts[0].subject.startswith("Objectif de contact dépassé")


# --------------------------------------------------------------------------- stale staff mail


def _staff_mail(engine):
    with Session(engine) as session:
        return sorted((o.step_id.split(":")[0], o.to_address, o.status) for o in session.exec(
            select(Outbox).where(Outbox.enrollment_id.is_(None))).scalars())


@pytest.mark.parametrize("verdict, kw", [("accept", {}), ("reject", {"reason": "no-budget"}), ("later", {})])
def test_an_answer_before_the_handoff_email_left_cancels_it_and_nothing_stale_is_sent(world, clock, verdict, kw):
    """The email says 'call this lead before DATE': once sales answered, it must not reach the owner days later."""
    engine, settings, workspace = world
    _graded(world, clock)
    _event(world, clock, "demo_requested")  # handed off: the email waits for the next delivery
    assert _staff_mail(engine) == [("handoff", "claire@example.com", "pending")]
    _answer(world, clock, verdict, **kw)

    assert _staff_mail(engine) == [("handoff", "claire@example.com", "skipped")]
    transport = RecordingTransport()
    run_tick_inline(engine, settings, scenario="whitepaper-nurture", now=clock.advance(timedelta(hours=1)),
                    workspace=workspace, transport=transport, templates=TemplateLibrary(settings.templates_dir))
    assert [m.to for m in transport.sent] == []
    with Session(engine) as session:
        skipped = session.exec(select(Outbox).where(Outbox.step_id.like("handoff:%"))).scalars().one()
    assert skipped.error.startswith("hand-off answered") and verdict in skipped.error


def test_a_reassignment_cancels_the_old_owners_unsent_email_and_the_withdrawal_notice_still_goes(world, clock):
    from relance.sales import reassign

    engine, _, _ = world
    _graded(world, clock)
    _event(world, clock, "demo_requested")
    with Session(engine) as session:
        reassign(session, email=ZOE, to="camille@example.com", by="direction@example.com", now=clock.now())
        session.commit()
    assert _staff_mail(engine) == [("handoff", "claire@example.com", "skipped"), ("reassigned", "camille@example.com", "pending")]
    _event(world, clock, "unsubscribed")  # the lead leaves: the open hand-off is withdrawn, its owner told
    assert _staff_mail(engine) == [("handoff", "claire@example.com", "skipped"), ("reassigned", "camille@example.com", "skipped"),
                                   ("withdrawn", "camille@example.com", "pending")]


def test_a_reassignment_does_not_turn_the_rotation(world, clock):
    """claire is given a lead, which the manager moves to karim: the next lead is karim's turn, not claire's again."""
    from relance.sales import reassign

    engine, _, _ = world
    for email in (ZOE, "paul@acme.example"):
        _graded(world, clock, email=email, **{**HOT_PROFILE, "first_name": email[:4]})
    _event(world, clock, "demo_requested")
    with Session(engine) as session:
        reassign(session, email=ZOE, to="karim@example.com", by="direction@example.com", now=clock.now())
        session.commit()
    _event(world, clock, "demo_requested", email="paul@acme.example")
    assert _handoffs(engine, "paul@acme.example") == [("open", "karim@example.com")]
