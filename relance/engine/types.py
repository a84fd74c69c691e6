"""What the interpreter reads and what it returns. Plain data, no I/O.

A tick (database) and the simulator (virtual clock) both build these from their own
world, call `relance.engine.interpreter.advance`, then carry out the returned effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Union


@dataclass(frozen=True)
class LeadFacts:
    """What conditions may read about a lead."""

    id: int
    email: str
    stage: str = "lead"
    score: int = 0
    grade: str = "D"
    temperature: str = "cold"
    tags: frozenset[str] = frozenset()
    fields: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "Europe/Paris"


@dataclass(frozen=True)
class EventFact:
    """An event of the lead's. Email events carry `scenario`, `step_id` (the sending step),
    `enrollment_id` and, for clicks, `link` in their properties; downloads carry `asset`,
    page visits `path` (or `url`)."""

    type: str
    occurred_at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class EnrollmentState:
    """The part of an enrollment the interpreter moves forward.

    `step_id` is the step to run next, or the step being waited at when `waiting` is set.
    `waiting` = {"step_id", "kind": "wait"|"wait_until", "deadline": ISO str, "event_types": [...],
    "state": [...]}: the event types whose arrival may end a `wait_until`, and what of the lead's state
    (score, grade, temperature, stage, tag, field) it reads, so a change of the lead re-checks it.
    `memory` holds sticky split variants and per-step visit counts (JSON-serialisable).
    """

    step_id: str | None
    status: str = "active"  # active | completed | exited | failed
    due_at: datetime | None = None
    waiting: dict[str, Any] | None = None
    entered_at: datetime | None = None
    step_entered_at: datetime | None = None
    left_at: datetime | None = None
    exit_reason: str | None = None
    memory: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class SendEmail:
    step_id: str
    visit: int  # how many times this enrollment reached this step before (0 the first time)
    template: str
    subject: str  # the Jinja source; rendering is the email layer's job
    from_: str | None = None
    reply_to: str | None = None
    preheader: str | None = None
    transactional: str | None = None  # why it is not marketing (the step's `transactional:`)


@dataclass(frozen=True)
class AdjustScore:
    step_id: str
    points: int


@dataclass(frozen=True)
class ChangeLead:
    step_id: str
    stage: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class OpenHandoff:
    step_id: str
    owner: str | None = None
    team: str | None = None


@dataclass(frozen=True)
class NotifySomeone:
    step_id: str
    email: str | None = None
    template: str | None = None
    subject: str | None = None
    webhook: str | None = None


@dataclass(frozen=True)
class EnrollInto:
    step_id: str
    scenario: str


Effect = Union[SendEmail, AdjustScore, ChangeLead, OpenHandoff, NotifySomeone, EnrollInto]


@dataclass(frozen=True)
class Trace:
    """One executed step, as the step log stores it."""

    step_id: str
    kind: str  # send | wait | wait_until | if | score | set | handoff | notify | split | enroll | end | exit
    outcome: str  # e.g. sent, waiting, woken, timeout, then, else, variant:a, left, exited
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NotReady:
    """Why a lead is not at the hand-off point: `why` names its own figures (`score 29 < 60`), `reason` the rule it
    misses in words that read the same for every lead (`score below 60`), so that reasons can be counted."""

    why: str
    reason: str


@dataclass
class Advance:
    """The result of advancing one enrollment: its new state, what to do, what happened."""

    state: EnrollmentState
    effects: list[Effect] = field(default_factory=list)
    trace: list[Trace] = field(default_factory=list)
    lead: LeadFacts | None = None  # the lead as the interpreter last saw it (after score/set)
