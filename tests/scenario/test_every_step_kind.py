"""Every kind of step the language has is handled everywhere a step is dispatched on.

The kinds come from the scenario model's discriminated union itself, so a kind added to the union and
forgotten in the interpreter, the plan's edges, validation or the simulator fails here (see
docs/architecture.md for the files a new kind touches).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, get_args

import pytest

from relance.engine.interpreter import advance, enter
from relance.engine.types import LeadFacts
from relance.scenario.loader import Positions
from relance.scenario.model import STEP_TAGS, AnyStep, Scenario, _Step
from relance.scenario.plan import Plan, compile_scenario, step_conditions, step_waits
from relance.scenario.validate import validate_scenario
from relance.simulation.rates import EngagementRates
from relance.simulation.simulator import simulate

MONDAY = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
LEAD = LeadFacts(id=7, email="lea@acme.example")
QUIET = EngagementRates(open_rate=0.0, click_rate=0.0, download_rate=0.0, visit_rate=0.0, unsubscribe_rate=0.0, event_rate=0.0)


def union_members() -> dict[str, type]:
    """Tag -> class of every member of the pydantic discriminated union of steps."""
    union = get_args(_Step)[0]  # Annotated[Union[Annotated[cls, Tag(tag)], ...], Discriminator]
    return {get_args(member)[1].tag: get_args(member)[0] for member in get_args(union)}


KINDS = union_members()

# One step of each kind; every explicit edge goes to step `t`, so step `m` (written below it) is reached
# only when the step falls through to the following one.
EXAMPLES: dict[str, dict[str, Any]] = {
    "send": {"send": "welcome", "subject": "Bonjour", "next": "t"},
    "wait": {"wait": "1d", "next": "t"},
    "wait_until": {"wait_until": {"score_at_least": 10}, "timeout": "2d", "next": "t", "on_timeout": "t"},
    "if": {"if": {"tag": "vip"}, "then": "t", "else": "t"},
    "score": {"score": "+5", "next": "t"},
    "set": {"set": {"tag": "seen"}, "next": "t"},
    "handoff": {"handoff": "sales", "next": "t"},
    "notify": {"notify": {"email": "sales@acme.example"}, "next": "t"},
    "split": {"split": {"a": 1, "b": 1}, "a": "t", "b": "t"},
    "enroll": {"enroll": "other"},
    "end": {"end": True},
}


def document(kind: str, target: str = "t") -> dict[str, Any]:
    step = {key: target if value == "t" else value for key, value in EXAMPLES[kind].items()}
    return {"scenario": "kinds", "trigger": {"event": "downloaded"},
            "steps": [{"id": "s", **step}, {"id": "m", "end": True}, {"id": "t", "end": True}]}


def plan_of(kind: str) -> Plan:
    return compile_scenario(Scenario.model_validate(document(kind)))


def reached(plan: Plan) -> set[str]:
    """Steps reachable from the first one along the plan's edges."""
    seen, frontier = {plan.first}, [plan.first]
    while frontier:
        frontier = [t for node in frontier for t in plan.edges[node].values() if t is not None and t not in seen and not seen.add(t)]
    return seen


def test_the_union_the_checker_sees_is_the_union_pydantic_parses():
    assert set(KINDS.values()) == set(get_args(AnyStep)) and KINDS == STEP_TAGS


def test_every_kind_of_step_has_an_example_here():
    missing = sorted(set(KINDS) - set(EXAMPLES))
    assert not missing, f"new step kind(s) {missing}: add an example to EXAMPLES so the checks below cover them"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_plan_knows_the_edges_of_each_kind(kind):
    plan = plan_of(kind)
    edges = plan.edges["s"]
    assert all(target in plan.steps for target in edges.values() if target is not None)
    written = {key for key, value in EXAMPLES[kind].items() if value == "t" and key != "next"}
    assert written <= set(edges), f"{kind}: edges {dict(edges)} miss the written {sorted(written)}"
    assert isinstance(step_waits(plan.step("s")), bool) and isinstance(step_conditions(plan.step("s")), dict)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_interpreter_advances_each_kind_without_spinning(kind):
    plan = plan_of(kind)
    result = advance(plan, enter(plan, LEAD, MONDAY), LEAD, [], MONDAY)
    state = result.state
    assert result.trace and result.trace[0].step_id == "s", f"{kind}: the step left no trace"
    assert state.status in ("active", "completed"), f"{kind}: {state.status} ({state.exit_reason})"
    assert len(result.trace) <= 3  # s, then at most the end step it leads to: no loop up to the budget
    if state.status == "active":  # waiting at the step, or moved along one of its edges
        assert (state.step_id == "s" and state.due_at > MONDAY) or state.step_id in plan.edges["s"].values()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_validation_follows_the_same_edges_as_the_plan(kind):
    plan = plan_of(kind)
    problems = validate_scenario(Scenario.model_validate(document(kind)), Positions(), path="kinds.yaml")
    unreachable = {p.step_id for p in problems if "unreachable" in p.message}
    assert unreachable == set(plan.steps) - reached(plan), [p.message for p in problems]
    assert not [p for p in problems if "unreachable" not in p.message], [p.message for p in problems]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_validation_checks_every_edge_each_kind_writes(kind):
    written = sorted(key for key, value in EXAMPLES[kind].items() if value == "t")
    problems = validate_scenario(Scenario.model_validate(document(kind, target="nowhere")), Positions(), path="kinds.yaml")
    named = sorted(p.message.split(":")[0].strip("`") for p in problems if "names no step" in p.message)
    assert named == written


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_simulator_runs_each_kind(kind):
    report = simulate(plan_of(kind), leads=4, days=5, seed=1, rates=QUIET, start=MONDAY, spread=MONDAY - MONDAY)
    step = next(s for s in report.steps if s.step_id == "s")
    assert step.kind == kind and step.reached == 4
    assert report.totals.failed == 0 and report.totals.entered == 4
