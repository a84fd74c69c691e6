"""What wakes a `wait_until`: the event types it lists, the lead state it reads, and the predicate a change asks."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import get_args

import pytest
from pydantic import TypeAdapter

from relance.engine.conditions import event_types_of, holds, state_kinds_of
from relance.engine.interpreter import advance, enter, state_wait_holds
from relance.engine.types import EventFact, LeadFacts
from relance.scenario.model import CONDITION_TAGS, AnyCondition, Condition, Scenario, _Condition
from relance.scenario.plan import compile_scenario
from relance.simulation.engagement import Targets
from relance.store.segments import narrowing

MONDAY = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
LEAD = LeadFacts(id=7, email="lea@acme.example")
condition = TypeAdapter(Condition).validate_python

# one condition of every kind the language has, with the state it reads and the events that may end it
KINDS = {
    "opened": ({"opened": "mail"}, set(), {"email_opened"}),
    "clicked": ({"clicked": "mail"}, set(), {"email_clicked"}),
    "downloaded": ({"downloaded": "guide"}, set(), {"downloaded"}),
    "visited": ({"visited": "/tarifs*"}, set(), {"page_visited"}),
    "event": ({"event": "demo_requested"}, set(), {"demo_requested"}),
    "score_at_least": ({"score_at_least": 20}, {"score"}, set()),
    "grade_at_least": ({"grade_at_least": "B"}, {"grade"}, set()),
    "temperature": ({"temperature": "hot"}, {"temperature"}, set()),
    "stage_in": ({"stage_in": ["sql"]}, {"stage"}, set()),
    "tag": ({"tag": "vip"}, {"tag"}, set()),
    "field": ({"field": {"plan": "pro"}}, {"field"}, set()),
    "all": ({"all": [{"score_at_least": 20}, {"downloaded": "guide"}]}, {"score"}, {"downloaded"}),
    "any": ({"any": [{"tag": "vip"}, {"stage_in": ["sql"]}, {"visited": "/x"}]}, {"tag", "stage"}, {"page_visited"}),
    "not": ({"not": {"temperature": "cold"}}, {"temperature"}, set()),
}


def union_members() -> set[type]:
    """Every member of the pydantic discriminated union of conditions."""
    return {get_args(member)[0] for member in get_args(get_args(_Condition)[0])}


def test_every_kind_of_condition_is_covered():
    assert set(KINDS) == set(CONDITION_TAGS)
    assert {type(condition(document)) for document, _, _ in KINDS.values()} == union_members() == set(get_args(AnyCondition))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_dispatch_on_conditions_handles_each_kind(kind):
    """holds, the segment SQL and the simulator's targets end in assert_never: a forgotten kind raises here."""
    document, _, _ = KINDS[kind]
    assert holds(condition(document), lead=LEAD, events=[], now=MONDAY, since=MONDAY, scenario="demo") in (True, False)
    narrowing(condition(document))
    Targets.of(plan_of(document))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_condition_says_what_state_it_reads_and_which_events_may_end_it(kind):
    document, state, events = KINDS[kind]
    assert state_kinds_of(condition(document)) == state
    assert event_types_of(condition(document)) == events  # no made-up score_changed / stage_changed


def test_something_that_is_no_condition_is_refused_not_taken_for_one():
    with pytest.raises(AssertionError):
        state_kinds_of("score_at_least: 20")
    with pytest.raises(AssertionError):
        event_types_of(None)


def plan_of(wait_until: dict):
    return compile_scenario(Scenario.model_validate({
        "scenario": "demo", "trigger": {"event": "downloaded"},
        "steps": [{"id": "w", "wait_until": wait_until, "timeout": "30d"}, {"id": "after", "end": True}],
    }))


def test_a_sleeping_wait_records_what_of_the_lead_it_reads():
    plan = plan_of({"all": [{"score_at_least": 20}, {"tag": "vip"}, {"downloaded": "guide"}]})
    result = advance(plan, enter(plan, LEAD, MONDAY), LEAD, [], MONDAY)
    assert result.state.waiting["state"] == ["score", "tag"] and result.state.waiting["event_types"] == ["downloaded"]


def test_a_change_of_the_lead_wakes_a_state_wait_only_once_it_holds():
    plan = plan_of({"any": [{"score_at_least": 20}, {"stage_in": ["sql"]}]})
    asleep = advance(plan, enter(plan, LEAD, MONDAY), LEAD, [], MONDAY).state
    later = MONDAY + timedelta(hours=1)
    assert not state_wait_holds(plan, asleep, replace(LEAD, score=19), [], later)
    assert state_wait_holds(plan, asleep, replace(LEAD, score=20), [], later)
    assert state_wait_holds(plan, asleep, replace(LEAD, stage="sql"), [], later)
    # once due (woken, or at its deadline) a wait is the tick's, not the wake's
    assert not state_wait_holds(plan, replace(asleep, due_at=later), replace(LEAD, score=20), [], later)


def test_a_wait_on_events_only_is_never_woken_by_a_change_of_the_lead():
    plan = plan_of({"not": {"downloaded": "guide"}})
    downloaded = [EventFact("downloaded", MONDAY, {"asset": "guide"})]
    asleep = advance(plan, enter(plan, LEAD, MONDAY), LEAD, downloaded, MONDAY).state
    assert asleep.waiting["state"] == []
    # the condition would hold with no download: still, only an event's arrival may end such a wait
    assert not state_wait_holds(plan, asleep, replace(LEAD, score=99), [], MONDAY + timedelta(hours=1))
