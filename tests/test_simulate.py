"""The simulator: the real interpreter on a virtual clock, with synthetic engagement."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console


from relance.engine.types import EventFact
from relance.scenario.model import Scenario
from relance.scenario.plan import Plan, compile_scenario
from relance.scoring.config import ScoringConfig
from relance.simulation.engagement import Engagement, Targets, page_for
from relance.simulation.population import arrival_times, synthetic_lead
from relance.simulation.rates import EngagementRates, parse_rates

START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)  # a Monday
QUIET = dict(open_rate=0.0, click_rate=0.0, download_rate=0.0, visit_rate=0.0, unsubscribe_rate=0.0, event_rate=0.0)

NURTURE = {
    "scenario": "nurture-test",
    "trigger": {"event": "downloaded", "where": {"asset": "guide"}},
    "exit_when": [{"event": "unsubscribed"}],
    "steps": [
        {"id": "hello", "send": "welcome", "subject": "Bonjour"},
        {"id": "pause", "wait": "3d"},
        {"id": "opened?", "if": {"opened": "hello"}, "then": "bump", "else": "reminder"},
        {"id": "reminder", "send": "reminder", "subject": "Relance", "next": "wait-case"},
        {"id": "bump", "score": "+15"},
        {"id": "wait-case", "wait_until": {"downloaded": "etude-de-cas"}, "timeout": "7d", "on_timeout": "newsletter"},
        {"id": "to-sales", "handoff": "sales", "next": "done"},
        {"id": "newsletter", "enroll": "monthly-newsletter"},
        {"id": "done", "end": True},
    ],
}


def plan_of(document: dict) -> Plan:
    return compile_scenario(Scenario.model_validate(document))


@pytest.fixture
def nurture() -> Plan:
    return plan_of(NURTURE)


# --------------------------------------------------------------------------- rates


def test_rates_parse_short_names_percentages_and_keep_the_other_defaults():
    rates = parse_rates("open=0.4, click=10%,unsubscribe=0")
    assert (rates.open_rate, rates.click_rate, rates.unsubscribe_rate) == (0.4, 0.1, 0.0)
    assert rates.download_rate == EngagementRates().download_rate == 0.05
    assert parse_rates("") == EngagementRates()


def test_an_unknown_rate_names_the_closest_one():
    with pytest.raises(ValueError, match=r"unknown rate 'opne' \(did you mean open\?\)"):
        parse_rates("opne=0.4")


def test_a_rate_above_one_is_refused_with_its_name():
    with pytest.raises(ValueError, match=r"rates: visit: .*less than or equal to 1"):
        parse_rates("visit=1.5")
    with pytest.raises(ValueError, match=r"open=lots is not a number"):
        parse_rates("open=lots")


def test_more_clicks_than_opens_is_refused():
    with pytest.raises(ValueError, match="a click needs an open"):
        parse_rates("open=0.05")  # the default click rate is 0.08


# --------------------------------------------------------------------------- engagement


def test_targets_are_read_from_every_condition_of_the_scenario():
    plan = plan_of({
        "scenario": "targets",
        "trigger": {"event": "form_submitted"},
        "exit_when": [{"any": [{"event": "demo_requested"}, {"visited": "/tarifs*"}]}],
        "steps": [
            {"id": "mail", "send": "t", "subject": "s"},
            {"id": "clicked?", "if": {"clicked": "mail", "link": "webinar"}, "then": "wait-pdf", "else": "wait-pdf"},
            {"id": "wait-pdf", "wait_until": {"event": "downloaded", "where": {"asset": "etude-de-cas"}}, "timeout": "7d"},
            {"id": "again?", "if": {"not": {"downloaded": "livre-blanc"}}, "then": "bye"},
            {"id": "bye", "end": True},
        ],
    })
    targets = Targets.of(plan)
    assert list(targets.downloads) == [{"asset": "etude-de-cas"}, {"asset": "livre-blanc"}]
    assert list(targets.visits) == [{"path": "/tarifs"}]
    assert list(targets.others) == [("demo_requested", {})]
    assert targets.links == {"mail": ("https://www.example.com/", "https://www.example.com/webinar")}


def test_a_visited_glob_becomes_a_page_that_matches_it():
    assert page_for("/tarifs*") == "/tarifs"
    assert page_for("/blog/*/lead-scoring") == "/blog//lead-scoring"
    assert page_for("/offre-[ab]") == "/offre-a"


def test_certain_rates_give_an_open_a_click_a_download_and_a_visit(nurture):
    rates = EngagementRates(open_rate=1.0, click_rate=1.0, download_rate=1.0, visit_rate=1.0, unsubscribe_rate=0.0)
    engagement = Engagement(scenario="nurture-test", rates=rates, targets=Targets.of(nurture))
    events = engagement.reactions(step_id="hello", enrollment_id=7, sent_at=START, rng=random.Random(1))
    by_type = {event.type: event for event in events}
    assert sorted(by_type) == ["downloaded", "email_clicked", "email_opened"]  # no visited condition: no visits
    assert by_type["email_opened"].properties == {"scenario": "nurture-test", "step_id": "hello", "enrollment_id": 7}
    assert by_type["email_clicked"].properties["link"].startswith("https://")
    assert by_type["downloaded"].properties == {"asset": "etude-de-cas"}
    assert START < by_type["email_opened"].occurred_at < by_type["email_clicked"].occurred_at


def test_reaction_frequencies_follow_the_rates(nurture):
    engagement = Engagement(scenario="nurture-test", rates=EngagementRates(), targets=Targets.of(nurture))
    rng = random.Random(3)
    counts: Counter = Counter()
    sends = 20_000
    for _ in range(sends):
        counts.update(e.type for e in engagement.reactions(step_id="hello", enrollment_id=1, sent_at=START, rng=rng))
    assert counts["email_opened"] / sends == pytest.approx(0.35, abs=0.015)
    assert counts["email_clicked"] / sends == pytest.approx(0.08, abs=0.01)
    assert counts["downloaded"] / sends == pytest.approx(0.05, abs=0.01)
    assert counts["unsubscribed"] / sends == pytest.approx(0.005, abs=0.003)


def test_behaviour_points_use_the_matching_glob_else_the_default():
    from relance.scoring.rules import behaviour_points  # the one matcher, ingestion's (tests/test_one_matcher.py)

    config = ScoringConfig.model_validate({"behaviour": {"email_opened": 1, "page_visited": {"default": 1, "/tarifs*": 10}}})
    assert behaviour_points(config, "page_visited", {"path": "/tarifs-pme"}) == 10
    assert behaviour_points(config, "page_visited", {"path": "/blog"}) == 1
    assert behaviour_points(config, "email_opened", {}) == 1
    assert behaviour_points(config, "downloaded", {"asset": "x"}) == 0


# --------------------------------------------------------------------------- population


def test_synthetic_leads_are_varied_and_the_same_for_a_seed():
    def draw(seed: int):
        rng = random.Random(seed)
        return [synthetic_lead(i, rng, scoring=ScoringConfig()) for i in range(300)]

    leads = draw(5)
    assert draw(5) == leads
    assert {lead.grade for lead in leads} == {"A", "B", "C", "D"}
    assert {lead.stage for lead in leads} == {"lead", "nurturing", "mql"}
    assert len({lead.timezone for lead in leads}) >= 4
    assert len({lead.email for lead in leads}) == 300


def test_arrivals_spread_over_the_window_in_order_or_all_at_start():
    times = arrival_times(500, start=START, spread=timedelta(days=7), rng=random.Random(2))
    assert times == sorted(times) and START <= times[0] and times[-1] < START + timedelta(days=7)
    assert times[-1] - times[0] > timedelta(days=6)
    assert arrival_times(3, start=START, spread=timedelta(0), rng=random.Random(2)) == [START] * 3


# --------------------------------------------------------------------------- simulate (the real interpreter)


def run(plan: Plan, leads: int = 200, days: int = 30, seed: int = 11, **rates: float):
    from relance.simulation.simulator import simulate

    return simulate(plan, leads=leads, days=days, seed=seed, rates=EngagementRates(**rates), start=START)


def test_the_same_seed_gives_the_same_report_and_another_seed_another(nurture):
    first = run(nurture, seed=11).as_dict()
    assert run(nurture, seed=11).as_dict() == first
    assert run(nurture, seed=12).as_dict() != first


def test_when_everyone_opens_everyone_takes_the_then_branch(nurture):
    report = run(nurture, open_rate=1.0, click_rate=0.0, download_rate=0.0, unsubscribe_rate=0.0, open_delay_hours=0.5)
    assert report.step("opened?").outcomes == {"then": 200}
    assert report.step("bump").reached == 200
    assert report.step("reminder").reached == 0
    assert report.totals.emails_sent == 200


def test_when_nobody_opens_everyone_takes_the_else_branch_and_gets_the_reminder(nurture):
    report = run(nurture, **QUIET)
    assert report.step("opened?").outcomes == {"else": 200}
    assert report.step("reminder").outcomes == {"sent": 200}
    assert report.step("bump").reached == 0
    assert report.totals.emails_sent == 400
    assert report.engagement == {}


def test_counts_add_up_at_every_step_and_in_the_totals(nurture):
    report = run(nurture, leads=600, days=12)  # short: some leads are still inside at the end
    totals = report.totals
    assert totals.entered == 600
    assert totals.entered == totals.completed + totals.moved + totals.exited + totals.failed + totals.inside
    assert totals.inside > 0 and totals.moved > 0 and totals.failed == 0
    assert sum(sum(step.left.values()) + step.inside for step in report.steps) == totals.entered
    for step in report.steps:
        assert step.reached == sum(step.outcomes.values()), step
        assert sum(step.left.values()) + step.inside <= step.reached, step
    assert report.step("hello").reached == 600
    assert totals.emails_sent == report.step("hello").outcomes["sent"] + report.step("reminder").outcomes.get("sent", 0)


def test_an_awaited_download_wakes_the_lead_before_the_timeout():
    plan = plan_of({
        "scenario": "wake-test",
        "trigger": {"event": "form_submitted"},
        "steps": [
            {"id": "invite", "send": "case-study-invite", "subject": "Étude de cas"},
            {"id": "wait-case", "wait_until": {"event": "downloaded", "where": {"asset": "etude-de-cas"}},
             "timeout": "7d", "on_timeout": "gave-up"},
            {"id": "got-it", "score": "+15", "next": "done"},
            {"id": "gave-up", "end": True},
            {"id": "done", "end": True},
        ],
    })
    from relance.simulation.simulator import simulate

    report = simulate(plan, leads=100, days=3, seed=4, start=START, spread=timedelta(0),
                      rates=EngagementRates(**{**QUIET, "download_rate": 1.0, "action_delay_hours": 2.0}))
    # a 3-day horizon ends long before the 7-day timeout: only waking early gets them through
    assert report.step("got-it").reached == 100
    assert "timeout" not in report.step("wait-case").outcomes
    assert report.totals.completed == 100 and report.step("done").left == {"completed": 100}


def test_unsubscribes_meet_the_exit_goal_and_nobody_gets_the_reminder(nurture):
    report = run(nurture, **{**QUIET, "unsubscribe_rate": 1.0, "action_delay_hours": 1.0})
    assert report.totals.exited == 200
    assert report.step("reminder").reached == 0
    assert report.engagement == {"unsubscribed": 200}


def test_an_enroll_step_counts_the_leads_as_moved_to_that_scenario(nurture):
    report = run(nurture, **QUIET)
    assert report.step("newsletter").left == {"to monthly-newsletter": 200}
    assert report.moved_to == {"monthly-newsletter": 200}
    assert report.totals.moved == 200 and report.totals.completed == 0


def test_a_segment_trigger_only_enters_leads_that_match_it():
    plan = plan_of({
        "scenario": "segment-test",
        "trigger": {"segment": {"all": [{"stage_in": ["nurturing"]}, {"grade_at_least": "B"}]}},
        "steps": [
            {"id": "fit?", "if": {"all": [{"stage_in": ["nurturing"]}, {"grade_at_least": "B"}]}, "then": "bye"},
            {"id": "bye", "end": True},
        ],
    })
    assert run(plan, leads=300, days=1).step("fit?").outcomes == {"then": 300}


def test_the_report_renders_every_step_in_plan_order_and_serialises_to_json(nurture):
    from relance.simulation.simulator import render_report

    report = run(nurture, leads=50, days=20)
    console = Console(record=True, width=200)
    console.print(render_report(report))
    text = console.export_text()
    first_column = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert first_column[: len(nurture.order)] == list(nurture.order)
    assert "to monthly-newsletter" in text and "emails sent" in text
    data = json.loads(json.dumps(report.as_dict()))
    assert [step["id"] for step in data["steps"]] == list(nurture.order)
    assert data["totals"]["entered"] == 50 and data["rates"]["open_rate"] == 0.35


def test_a_horizon_of_zero_days_is_refused_with_a_clear_message(nurture):
    from relance.simulation.simulator import simulate

    with pytest.raises(ValueError, match="--days must be at least 1"):
        simulate(nurture, leads=10, days=0, seed=1, start=START)


def test_simulated_events_earn_the_behaviour_points_of_scoring_yaml():
    plan = plan_of({
        "scenario": "points-test",
        "trigger": {"event": "form_submitted"},
        "steps": [
            {"id": "hello", "send": "welcome", "subject": "Bonjour"},
            {"id": "pause", "wait": "2d"},
            {"id": "hot?", "if": {"score_at_least": 1000}, "then": "to-sales", "else": "bye"},
            {"id": "to-sales", "handoff": "sales"},
            {"id": "bye", "end": True},
        ],
    })
    scoring = ScoringConfig.model_validate(
        {"behaviour": {"email_opened": 1000}, "handoff": {"score_at_least": 1000, "grade_at_least": "D"}}
    )
    from relance.simulation.simulator import simulate

    rates = EngagementRates(**{**QUIET, "open_rate": 1.0, "open_delay_hours": 0.5})
    report = simulate(plan, leads=80, days=5, seed=2, start=START, spread=timedelta(0), rates=rates, scoring=scoring)
    assert report.step("hot?").outcomes == {"then": 80}
    assert report.totals.handoffs == 80
    unscored = simulate(plan, leads=80, days=5, seed=2, start=START, spread=timedelta(0), rates=rates)
    assert unscored.step("hot?").outcomes == {"else": 80} and unscored.totals.handoffs == 0


def test_a_wait_on_the_score_wakes_as_soon_as_simulated_events_raise_it():
    plan = plan_of({
        "scenario": "score-wake-test",
        "trigger": {"event": "form_submitted"},
        "steps": [
            {"id": "hello", "send": "welcome", "subject": "Bonjour"},
            {"id": "wait-score", "wait_until": {"score_at_least": 100}, "timeout": "30d", "on_timeout": "gave-up"},
            {"id": "warm", "send": "case-study-invite", "subject": "Étude de cas", "next": "done"},
            {"id": "gave-up", "end": True},
            {"id": "done", "end": True},
        ],
    })
    scoring = ScoringConfig.model_validate({"behaviour": {"email_opened": 100}})  # synthetic leads start below 45
    from relance.simulation.simulator import simulate

    rates = EngagementRates(**{**QUIET, "open_rate": 1.0, "open_delay_hours": 2.0})
    report = simulate(plan, leads=60, days=5, seed=3, start=START, spread=timedelta(0), rates=rates, scoring=scoring)
    # a 5-day horizon ends long before the 30-day timeout: only the open's points waking the wait get them through
    assert report.step("wait-score").outcomes == {"woken": 60}
    assert report.step("warm").outcomes == {"sent": 60} and report.totals.completed == 60


@pytest.mark.parametrize("awaited", [{"stage_in": ["mql"]}, {"stage_in": ["sql-pending"]}])
def test_a_wait_on_the_stage_wakes_when_simulated_points_cross_the_mql_line_or_the_handoff_point(awaited):
    """As ingestion does: an event's points make the lead an MQL, or hand it to sales at the hand-off point."""
    plan = plan_of({
        "scenario": "stage-wake-test",
        "trigger": {"event": "form_submitted"},
        "steps": [
            {"id": "hello", "send": "welcome", "subject": "Bonjour"},
            {"id": "wait-stage", "wait_until": awaited, "timeout": "30d", "on_timeout": "gave-up"},
            {"id": "warm", "send": "case-study-invite", "subject": "Étude de cas", "next": "done"},
            {"id": "gave-up", "end": True},
            {"id": "done", "end": True},
        ],
    })
    handoff = 100 if awaited["stage_in"] == ["sql-pending"] else 100_000
    scoring = ScoringConfig.model_validate({
        "behaviour": {"email_opened": 100}, "mql": {"score_at_least": 100, "grade_at_least": "D"},
        "handoff": {"score_at_least": handoff, "grade_at_least": "D"},
    })
    from relance.simulation.simulator import simulate

    rates = EngagementRates(**{**QUIET, "open_rate": 1.0, "open_delay_hours": 2.0})
    report = simulate(plan, leads=60, days=5, seed=3, start=START, spread=timedelta(0), rates=rates, scoring=scoring)
    outcomes = report.step("wait-stage").outcomes  # a synthetic lead may be an MQL already: then it is met at once
    assert outcomes["woken"] >= 40 and outcomes["woken"] + outcomes.get("met", 0) == 60
    assert report.step("warm").outcomes == {"sent": 60}
    assert report.totals.handoffs == (60 if handoff == 100 else 0)
