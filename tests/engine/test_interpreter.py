"""The interpreter on a virtual clock: paths asserted through the trace."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from relance.engine.conditions import event_types_of, holds
from relance.engine.interpreter import advance, enter, split_variant
from relance.engine.triggers import event_triggers, may_enter
from relance.engine.types import AdjustScore, ChangeLead, EnrollInto, EventFact, OpenHandoff, LeadFacts, SendEmail
from relance.engine.windows import into_window
from relance.scenario.model import EventTrigger, ReentryAfter, Scenario, SendWindow
from relance.scenario.plan import compile_scenario

MONDAY = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
LEAD = LeadFacts(id=7, email="lea@acme.example", timezone="Europe/Paris")


def plan_of(steps, **extra):
    return compile_scenario(Scenario.model_validate({"scenario": "demo", "trigger": {"event": "downloaded"}, "steps": steps, **extra}))


def run(plan, state, now, events=(), lead=LEAD, **kw):
    result = advance(plan, state, lead, list(events), now, **kw)
    return result, [(t.step_id, t.outcome) for t in result.trace]


WHITEPAPER = [
    {"id": "guide", "send": "whitepaper-followup", "subject": "Votre livre blanc"},
    {"id": "pause", "wait": "3d"},
    {"id": "opened?", "if": {"opened": "guide"}, "then": "case", "else": "reminder"},
    {"id": "reminder", "send": "whitepaper-reminder", "subject": "Vous l'avez lu ?", "next": "wait-dl"},
    {"id": "case", "send": "case-study-invite", "subject": "Étude de cas"},
    {"id": "wait-dl", "wait_until": {"downloaded": "etude-de-cas"}, "timeout": "7d", "on_timeout": "monthly"},
    {"id": "bump", "score": "+15"},
    {"id": "to-sales", "handoff": "sales"},
    {"id": "monthly", "enroll": "monthly-newsletter"},
]


def opened(step, at):
    return EventFact("email_opened", at, {"scenario": "demo", "step_id": step})


def test_unopened_email_takes_the_else_branch_and_times_out_to_the_newsletter():
    plan = plan_of(WHITEPAPER)
    state = enter(plan, LEAD, MONDAY)
    first, path = run(plan, state, MONDAY)
    assert path == [("guide", "sent"), ("pause", "waiting")]
    assert isinstance(first.effects[0], SendEmail) and first.state.due_at == MONDAY + timedelta(days=3)
    second, path = run(plan, first.state, MONDAY + timedelta(days=3))
    assert path == [("pause", "waited"), ("opened?", "else"), ("reminder", "sent"), ("wait-dl", "waiting")]
    third, path = run(plan, second.state, MONDAY + timedelta(days=10))
    assert path == [("wait-dl", "timeout"), ("monthly", "to:monthly-newsletter")]
    assert third.state.status == "completed" and isinstance(third.effects[0], EnrollInto)


def test_opened_email_takes_the_then_branch_and_a_download_wakes_the_wait_early():
    plan = plan_of(WHITEPAPER)
    events = [opened("guide", MONDAY + timedelta(hours=5))]
    state = run(plan, enter(plan, LEAD, MONDAY), MONDAY, events)[0].state
    result, path = run(plan, state, MONDAY + timedelta(days=3), events)
    assert ("opened?", "then") in path and ("case", "sent") in path
    assert result.state.waiting["event_types"] == ["downloaded"]
    woken_at = MONDAY + timedelta(days=4)
    events.append(EventFact("downloaded", woken_at, {"asset": "etude-de-cas"}))
    result.state.due_at = woken_at  # what ingestion does for the event types the wait listed
    result, path = run(plan, result.state, woken_at, events, handoff_ready=lambda lead: lead.score >= 15)
    assert path == [("wait-dl", "woken"), ("bump", "scored"), ("to-sales", "handed-off"), ("monthly", "to:monthly-newsletter")]
    assert [type(e) for e in result.effects] == [AdjustScore, OpenHandoff, EnrollInto]
    assert result.lead.score == 15


def test_an_unrelated_wake_keeps_the_lead_waiting_until_its_deadline():
    plan = plan_of(WHITEPAPER[4:6])
    state = run(plan, enter(plan, LEAD, MONDAY), MONDAY)[0].state
    result, path = run(plan, state, MONDAY + timedelta(days=1), [EventFact("downloaded", MONDAY, {"asset": "other"})])
    assert path == [] and result.state.status == "active"
    assert result.state.due_at == MONDAY + timedelta(days=7)


def test_the_goal_is_checked_before_every_step():
    plan = plan_of(WHITEPAPER, exit_when=[{"event": "unsubscribed"}, {"stage_in": ["sql"]}])
    state = run(plan, enter(plan, LEAD, MONDAY), MONDAY)[0].state
    events = [EventFact("unsubscribed", MONDAY + timedelta(days=1))]
    result, path = run(plan, state, MONDAY + timedelta(days=3), events)
    assert path == [("pause", "exited")] and result.state.status == "exited"
    assert result.state.exit_reason == "goal: event unsubscribed"
    sql_lead = LeadFacts(id=8, email="x@y.example", stage="sql")
    assert run(plan, enter(plan, sql_lead, MONDAY), MONDAY, lead=sql_lead)[1] == [("guide", "exited")]


def test_events_before_entry_do_not_count_unless_within_says_so():
    old = [EventFact("downloaded", MONDAY - timedelta(days=2), {"asset": "x"})]
    cond = Scenario.model_validate({"scenario": "s", "trigger": {"event": "x"}, "exit_when": [{"downloaded": "x"}, {"downloaded": "x", "within": "3d"}], "steps": [{"id": "e", "end": True}]}).exit_when
    kw = dict(lead=LEAD, events=old, now=MONDAY, since=MONDAY, scenario="s")
    assert not holds(cond[0], **kw) and holds(cond[1], **kw)
    assert event_types_of(cond[0]) == {"downloaded"}


def test_set_score_and_conditions_see_the_changes_within_one_advance():
    plan = plan_of([
        {"id": "s", "set": {"stage": "nurturing", "tag": ["a", "b"], "field": {"segment": "pme"}}},
        {"id": "p", "score": 45},
        {"id": "hot?", "if": {"all": [{"score_at_least": 45}, {"tag": "b"}, {"field": {"segment": "pme"}}, {"not": {"stage_in": ["lead"]}}]}, "then": "yes", "else": "no"},
        {"id": "no", "end": True},
        {"id": "yes", "end": True},
    ])
    result, path = run(plan, enter(plan, LEAD, MONDAY), MONDAY)
    assert path[-2:] == [("hot?", "then"), ("yes", "left")]
    change = result.effects[0]
    assert isinstance(change, ChangeLead) and change.stage == "nurturing" and change.tags == ("a", "b")


def test_split_is_sticky_per_lead_and_follows_the_weights():
    plan = plan_of([
        {"id": "ab", "split": {"a": 50, "b": 50}, "a": "va", "b": "vb"},
        {"id": "va", "end": True},
        {"id": "vb", "end": True},
    ])
    counts = Counter(split_variant({"a": 50, "b": 50}, lead_id=i, scenario="demo", step_id="ab") for i in range(2000))
    assert 900 < counts["a"] < 1100
    first = run(plan, enter(plan, LEAD, MONDAY), MONDAY)[1]
    again = run(plan, enter(plan, LEAD, MONDAY + timedelta(days=90)), MONDAY + timedelta(days=90))[1]
    assert first == again and first[0][1].startswith("variant:")
    assert Counter(split_variant({"a": 1, "b": 3}, lead_id=i, scenario="d", step_id="x") for i in range(2000))["b"] > 1350


def test_a_loop_without_a_wait_is_stopped_and_named():
    plan = plan_of([{"id": "a", "score": 1}, {"id": "b", "score": 1, "next": "a"}])
    result, _ = run(plan, enter(plan, LEAD, MONDAY), MONDAY)
    assert result.state.status == "failed" and "a -> b" in result.state.exit_reason


def test_a_loop_with_a_wait_sends_again_with_a_new_visit_number():
    plan = plan_of([{"id": "mail", "send": "t", "subject": "s"}, {"id": "w", "wait": "1w", "next": "mail"}])
    state = run(plan, enter(plan, LEAD, MONDAY), MONDAY)[0].state
    result, _ = run(plan, state, MONDAY + timedelta(weeks=1))
    assert [e.visit for e in result.effects] == [1]


def test_nothing_happens_before_the_enrollment_is_due():
    plan = plan_of(WHITEPAPER)
    state = run(plan, enter(plan, LEAD, MONDAY), MONDAY)[0].state
    result, path = run(plan, state, MONDAY + timedelta(days=2))
    assert path == [] and result.state == state


WEEKDAYS = SendWindow(days=["mon", "tue", "wed", "thu", "fri"], hours="09:00-18:00")


@pytest.mark.parametrize(
    ("when", "tz", "expected"),
    [
        # Saturday noon in Paris -> Monday 09:00 Paris (08:00 UTC in winter)
        (datetime(2026, 1, 10, 11, 0, tzinfo=timezone.utc), "Europe/Paris", datetime(2026, 1, 12, 8, 0, tzinfo=timezone.utc)),
        # Tuesday 19:00 Paris, after hours -> Wednesday 09:00 Paris
        (datetime(2026, 1, 6, 18, 0, tzinfo=timezone.utc), "Europe/Paris", datetime(2026, 1, 7, 8, 0, tzinfo=timezone.utc)),
        # inside the window: unchanged
        (datetime(2026, 1, 6, 10, 30, tzinfo=timezone.utc), "Europe/Paris", datetime(2026, 1, 6, 10, 30, tzinfo=timezone.utc)),
        # Sunday 29 March 2026 is the DST change in Paris: Monday 09:00 is now 07:00 UTC
        (datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc), "Europe/Paris", datetime(2026, 3, 30, 7, 0, tzinfo=timezone.utc)),
        # Montréal: 20:00 local on Friday -> Monday 09:00 local (14:00 UTC)
        (datetime(2026, 1, 10, 1, 0, tzinfo=timezone.utc), "America/Montreal", datetime(2026, 1, 12, 14, 0, tzinfo=timezone.utc)),
        # unknown timezone: UTC
        (datetime(2026, 1, 10, 11, 0, tzinfo=timezone.utc), "Mars/Olympus", datetime(2026, 1, 12, 9, 0, tzinfo=timezone.utc)),
    ],
)
def test_waits_end_inside_the_send_window_in_the_leads_timezone(when, tz, expected):
    assert into_window(when, WEEKDAYS, tz) == expected


def test_a_wait_with_a_window_moves_the_due_time():
    plan = plan_of([{"id": "w", "wait": "1d", "window": {"days": ["mon"], "hours": "10:00-11:00"}}, {"id": "e", "end": True}])
    result, _ = run(plan, enter(plan, LEAD, MONDAY), MONDAY)
    assert result.state.due_at == datetime(2026, 1, 12, 9, 0, tzinfo=timezone.utc)


def test_triggers_and_reentry():
    trigger = EventTrigger(event="downloaded", where={"asset": "guide"})
    assert event_triggers(trigger, EventFact("downloaded", MONDAY, {"asset": "guide"}))
    assert not event_triggers(trigger, EventFact("downloaded", MONDAY, {"asset": "autre"}))
    assert may_enter("never", previous_entries=[], active=False, now=MONDAY)
    assert not may_enter("never", previous_entries=[MONDAY], active=False, now=MONDAY)
    assert not may_enter("always", previous_entries=[MONDAY], active=True, now=MONDAY)
    assert may_enter("always", previous_entries=[MONDAY], active=False, now=MONDAY)
    after = ReentryAfter(after="30d")
    assert not may_enter(after, previous_entries=[MONDAY], active=False, now=MONDAY + timedelta(days=29))
    assert may_enter(after, previous_entries=[MONDAY], active=False, now=MONDAY + timedelta(days=30))


def test_an_awaited_event_stamped_after_the_ticks_clock_makes_the_wait_due_at_that_moment():
    """A download that arrived while the tick ran, stamped a little later than the tick's `now`: the lead
    is due when it happened, not at the 7-day timeout (then the event counts and the wait is met)."""
    plan = plan_of([
        {"id": "wait-dl", "wait_until": {"downloaded": "etude-de-cas"}, "timeout": "7d", "on_timeout": "gone"},
        {"id": "thanks", "send": "merci", "subject": "Merci"},
        {"id": "gone", "end": True},
    ])
    later = MONDAY + timedelta(seconds=40)
    events = [EventFact("page_visited", MONDAY + timedelta(seconds=5), {"path": "/"}),  # not awaited: no early wake
              EventFact("downloaded", later, {"asset": "etude-de-cas"})]
    first, path = run(plan, enter(plan, LEAD, MONDAY), MONDAY, events)
    assert path == [("wait-dl", "waiting")] and first.state.due_at == later
    second, path = run(plan, first.state, later, events)
    assert path == [("wait-dl", "woken"), ("thanks", "sent"), ("gone", "left")]
    alone, _ = run(plan, enter(plan, LEAD, MONDAY), MONDAY, events[:1])
    assert alone.state.due_at == MONDAY + timedelta(days=7)
