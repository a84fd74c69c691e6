"""A compiled scenario: immutable, every edge explicit, identified by a content hash.

Enrollments are pinned to the hash of the plan they entered with, so editing a live
scenario never changes the path of leads already inside it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, assert_never

from relance.scenario.model import (
    AnyCondition,
    AnyStep,
    End,
    Enroll,
    Handoff,
    If,
    Notify,
    Scenario,
    Score,
    Send,
    SetStep,
    Split,
    Step,
    Wait,
    WaitUntil,
)

LEAVE = None  # an edge to None means: the lead leaves the scenario


def definition_of(scenario: Scenario) -> dict[str, Any]:
    """The canonical JSON form of a scenario (what is stored and hashed). The tick's `schedule` is left out: it
    says when the server runs the tick, not the path a lead takes, so changing it starts no new version."""
    return scenario.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"schedule"})


def content_hash(scenario: Scenario) -> str:
    canonical = json.dumps(definition_of(scenario), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    scenario: Scenario
    hash: str
    order: tuple[str, ...]
    steps: Mapping[str, Step] = field(repr=False)
    edges: Mapping[str, Mapping[str, str | None]] = field(repr=False)

    @property
    def name(self) -> str:
        return self.scenario.scenario

    @property
    def first(self) -> str:
        return self.order[0]

    def step(self, step_id: str) -> Step:
        return self.steps[step_id]

    def definition(self) -> dict[str, Any]:
        return definition_of(self.scenario)


def _edges_of(step: AnyStep, following: str | None) -> dict[str, str | None]:
    """Every edge of a step, by name (`following`: where `next` goes); validation reads the same edges."""
    match step:
        case If():
            return {"then": step.then or following, "else": step.else_ or following}
        case WaitUntil():
            return {"next": following, "on_timeout": step.on_timeout or following}
        case Split():
            return dict(step.branches)
        case Enroll() | End():
            return {}
        case Send() | Wait() | Score() | SetStep() | Handoff() | Notify():
            return {"next": following}
        case _:
            assert_never(step)


def step_conditions(step: AnyStep) -> dict[str, AnyCondition]:
    """The conditions a step tests, by YAML key (validation and the simulator's engagement read them)."""
    match step:
        case If():
            return {"if": step.if_}
        case WaitUntil():
            return {"wait_until": step.wait_until}
        case Send() | Wait() | Score() | SetStep() | Handoff() | Notify() | Split() | Enroll() | End():
            return {}
        case _:
            assert_never(step)


def step_waits(step: AnyStep) -> bool:
    """Whether a lead may stop at this step until later: a loop through it is no busy loop."""
    match step:
        case Wait() | WaitUntil():
            return True
        case Send() | If() | Score() | SetStep() | Handoff() | Notify() | Split() | Enroll() | End():
            return False
        case _:
            assert_never(step)


def compile_scenario(scenario: Scenario) -> Plan:
    """Compile a *validated* scenario (see `relance.scenario.validate`) into a plan."""
    order = tuple(step.id for step in scenario.steps)
    steps = {step.id: step for step in scenario.steps}
    edges: dict[str, Mapping[str, str | None]] = {}
    for index, step in enumerate(scenario.steps):
        default = order[index + 1] if index + 1 < len(order) else LEAVE
        edges[step.id] = MappingProxyType(_edges_of(step, step.next if step.next is not None else default))
    return Plan(
        scenario=scenario,
        hash=content_hash(scenario),
        order=order,
        steps=MappingProxyType(steps),
        edges=MappingProxyType(edges),
    )


def plan_from_definition(definition: Mapping[str, Any]) -> Plan:
    """Rebuild a stored plan; the hash is recomputed, so it must match the stored one."""
    return compile_scenario(Scenario.model_validate(dict(definition)))
