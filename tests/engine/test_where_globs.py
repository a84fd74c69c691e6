"""`where:` filters: a value with *, ? or [ is a glob, in triggers, conditions and the simulator alike (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from relance.engine.conditions import holds, where_matches
from relance.engine.triggers import event_triggers
from relance.engine.types import EventFact, LeadFacts
from relance.scenario.model import EventHappened, EventTrigger, Scenario
from relance.scenario.plan import compile_scenario
from relance.simulation.engagement import Targets, example_properties
from relance.simulation.rates import EngagementRates
from relance.simulation.simulator import simulate

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
LEAD = LeadFacts(id=1, email="lea@acme.example")


def visit(path: str, **more) -> EventFact:
    return EventFact("page_visited", NOW - timedelta(minutes=5), {"path": path, **more})


def condition_holds(condition: dict, *events: EventFact) -> bool:
    parsed = EventHappened.model_validate(condition)
    return holds(parsed, lead=LEAD, events=list(events), now=NOW, since=NOW - timedelta(days=1), scenario="demo")


@pytest.mark.parametrize("path, enrolls", [
    ("/tarifs", True), ("/tarifs/entreprise", True), ("/tarifs-2026", True),
    ("/blog/tarifs", False), ("/Tarifs", False), ("/pricing", False),
])
def test_a_trigger_on_pages_matching_a_glob_enrolls_the_visits_of_those_pages(path, enrolls):
    trigger = EventTrigger.model_validate({"event": "page_visited", "where": {"path": "/tarifs*"}})
    assert event_triggers(trigger, visit(path)) is enrolls


@pytest.mark.parametrize("path, holds_", [("/blog/lead-scoring", True), ("/blog/", True), ("/blog", False), ("/tarifs", False)])
def test_an_event_condition_on_pages_matching_a_glob_holds_for_those_pages(path, holds_):
    assert condition_holds({"event": "page_visited", "where": {"path": "/blog/*"}}, visit(path)) is holds_


def test_every_key_of_where_takes_globs_and_every_filter_must_match():
    download = EventFact("downloaded", NOW, {"asset": "livre-blanc-2026", "form": "B7", "lang": "fr"})
    assert where_matches({"asset": "livre-blanc-*", "form": "B?", "lang": "[fe][rn]"}, download.properties)
    assert not where_matches({"asset": "livre-blanc-*", "form": "C?"}, download.properties)
    trigger = EventTrigger.model_validate({"event": "downloaded", "where": {"asset": "livre-blanc-*"}})
    assert event_triggers(trigger, download)


def test_values_without_glob_marks_stay_plain_equality():
    assert where_matches({"asset": "guide"}, {"asset": "guide"})
    assert not where_matches({"asset": "guide"}, {"asset": "guide-2"})
    assert where_matches({"seats": 10}, {"seats": "10"})  # `relance event --prop seats=10` sends text
    assert where_matches({"vip": True}, {"vip": True})


def test_a_glob_needs_the_property_and_brackets_write_a_mark_literally():
    assert not where_matches({"utm_source": "*"}, {})  # "any utm_source" means one was sent
    assert where_matches({"utm_source": "*"}, {"utm_source": "linkedin"})
    assert where_matches({"form": "[[]promo]"}, {"form": "[promo]"})
    assert not where_matches({"form": "[[]promo]"}, {"form": "p"})
    assert where_matches({"q": "what[?]"}, {"q": "what?"}) and not where_matches({"q": "what[?]"}, {"q": "whats"})


GLOB_SCENARIO = {
    "scenario": "pricing-visitors",
    "trigger": {"event": "page_visited", "where": {"path": "/tarifs*"}},
    "steps": [
        {"id": "hello", "send": "welcome", "subject": "Bonjour"},
        {"id": "wait-blog", "wait_until": {"event": "page_visited", "where": {"path": "/blog/*"}}, "timeout": "7d",
         "on_timeout": "gave-up"},
        {"id": "read-blog", "score": "+5", "next": "done"},
        {"id": "gave-up", "end": True},
        {"id": "done", "end": True},
    ],
}


def test_the_simulator_draws_real_pages_that_the_globs_match():
    plan = compile_scenario(Scenario.model_validate(GLOB_SCENARIO))
    (visits,) = Targets.of(plan).visits
    assert "*" not in visits["path"] and where_matches({"path": "/blog/*"}, visits)
    entry = example_properties(plan.scenario.trigger.where)
    assert "*" not in entry["path"] and event_triggers(plan.scenario.trigger, EventFact("page_visited", NOW, entry))
    assert example_properties({"asset": "guide", "form": "B?"}) == {"asset": "guide", "form": "Bx"}


def test_the_simulator_wakes_a_wait_on_a_glob_visit_as_the_engine_does():
    plan = compile_scenario(Scenario.model_validate(GLOB_SCENARIO))
    quiet = dict(open_rate=0.0, click_rate=0.0, download_rate=0.0, unsubscribe_rate=0.0, event_rate=0.0)
    report = simulate(plan, leads=50, days=3, seed=2, start=NOW, spread=timedelta(0),
                      rates=EngagementRates(**quiet, visit_rate=1.0, action_delay_hours=2.0))
    assert report.step("read-blog").reached == 50 and "timeout" not in report.step("wait-blog").outcomes
