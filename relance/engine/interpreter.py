"""The interpreter: advances one enrollment through its plan until a wait or the end.

Pure: it reads a plan, the enrollment's state, the lead and its events, and `now`; it returns
the new state, the effects to carry out (emails, score, stage...) and a trace row per step.
A bounded loop (a safety stop at a few times the number of steps) guards against cycles that
validation should already have refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime
from typing import Callable, Sequence, assert_never

from relance.clock import ensure_utc
from relance.engine.conditions import describe, event_types_of, holds, state_kinds_of
from relance.engine.types import (
    AdjustScore,
    Advance,
    ChangeLead,
    EnrollInto,
    EnrollmentState,
    EventFact,
    OpenHandoff,
    LeadFacts,
    NotReady,
    NotifySomeone,
    SendEmail,
    Trace,
)
from relance.engine.windows import into_window
from relance.scenario.model import AnyStep, End, Enroll, Handoff, If, Notify, Score, Send, SetStep, Split, Wait, WaitUntil
from relance.scenario.plan import Plan

# True: hand off; False or a NotReady (which says why): not at the hand-off point; a sentence: held back (a rejected
# lead cooling off), and why
HandoffReady = Callable[[LeadFacts], "bool | str | NotReady"]
COOLING_OFF = "cooling off after a rejection"  # the reason of every `cooling-off` row: its `why` has the lead's date


def enter(plan: Plan, lead: LeadFacts, now: datetime) -> EnrollmentState:
    """A new enrollment at the first step, due now."""
    return EnrollmentState(step_id=plan.first, status="active", due_at=now, entered_at=now, step_entered_at=now)


def split_variant(weights: dict[str, int], *, lead_id: int, scenario: str, step_id: str) -> str:
    """A variant chosen from a hash of lead, scenario and step: sticky, and spread by the weights."""
    digest = hashlib.sha256(f"{lead_id}:{scenario}:{step_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(weights.values())
    for name, weight in weights.items():
        if point < weight:
            return name
        point -= weight
    return next(reversed(weights))


class _Run:
    """One call of `advance`: the state being moved, and what it produced."""

    def __init__(self, plan: Plan, state: EnrollmentState, lead: LeadFacts, events: Sequence[EventFact], now: datetime,
                 handoff_ready: HandoffReady | None) -> None:
        self.plan, self.lead, self.events, self.now = plan, lead, events, now
        self.handoff_ready = handoff_ready
        self.state = replace(state, memory={k: (dict(v) if isinstance(v, dict) else v) for k, v in state.memory.items()})
        self.result = Advance(state=self.state, lead=lead)

    # -- helpers
    def holds(self, condition) -> bool:
        since = self.state.entered_at or self.now
        return holds(condition, lead=self.lead, events=self.events, now=self.now, since=since, scenario=self.plan.name)

    def trace(self, step_id: str, kind: str, outcome: str, **detail) -> None:
        self.result.trace.append(Trace(step_id=step_id, kind=kind, outcome=outcome, at=self.now, detail=detail))

    def go(self, target: str | None) -> None:
        """Follow an edge; None leaves the scenario."""
        self.state.waiting = None
        if target is None:
            self.finish("completed", None)
        else:
            self.state.step_id = target
            self.state.step_entered_at = self.now

    def finish(self, status: str, reason: str | None) -> None:
        self.state.status, self.state.exit_reason = status, reason
        self.state.due_at, self.state.waiting, self.state.left_at = None, None, self.now

    def wait_until(self, step_id: str, kind: str, deadline: datetime, event_types: frozenset[str] = frozenset(),
                   state: frozenset[str] = frozenset()) -> None:
        self.state.waiting = {"step_id": step_id, "kind": kind, "deadline": deadline.isoformat(),
                              "event_types": sorted(event_types), "state": sorted(state)}
        self.state.due_at = deadline

    def visit(self, step_id: str) -> int:
        visits = self.state.memory.setdefault("visits", {})
        count = visits.get(step_id, 0)
        visits[step_id] = count + 1
        return count

    # -- the loop
    def run(self) -> Advance:
        state = self.state
        if state.status != "active" or state.step_id is None or (state.due_at is not None and state.due_at > self.now):
            return self.result
        budget = 4 * len(self.plan.order) + 4
        seen: list[str] = []
        while state.status == "active" and (state.due_at is None or state.due_at <= self.now):
            if budget == 0:
                loop = " -> ".join(seen[-len(self.plan.order):])
                self.trace(state.step_id, "exit", "failed", reason="loop")
                self.finish("failed", f"stopped after {len(seen)} steps without a wait: {loop}")
                break
            budget -= 1
            step_id = state.step_id
            if step_id not in self.plan.steps:
                self.trace(step_id, "exit", "failed")
                self.finish("failed", f"step {step_id!r} is not in scenario version {self.plan.hash}")
                break
            goal = next((c for c in self.plan.scenario.exit_when if self.holds(c)), None)
            if goal is not None:
                self.trace(step_id, "exit", "exited", goal=describe(goal))
                self.finish("exited", f"goal: {describe(goal)}")
                break
            seen.append(step_id)
            self.step(self.plan.step(step_id))
        self.result.lead = self.lead
        return self.result

    def step(self, step: AnyStep) -> None:
        edges = self.plan.edges[step.id]
        match step:
            case Send():
                visit = self.visit(step.id)
                self.result.effects.append(SendEmail(step.id, visit, step.send, step.subject, step.from_, step.reply_to, step.preheader,
                                                         step.transactional))
                self.trace(step.id, "send", "sent", template=step.send, visit=visit)
                self.go(edges["next"])
            case Wait():
                self.pause(step, edges)
            case WaitUntil():
                self.await_condition(step, edges)
            case If():
                branch = "then" if self.holds(step.if_) else "else"
                self.trace(step.id, "if", branch)
                self.go(edges[branch])
            case Score():
                self.lead = replace(self.lead, score=self.lead.score + step.score)
                self.result.effects.append(AdjustScore(step.id, step.score))
                self.trace(step.id, "score", "scored", points=step.score)
                self.go(edges["next"])
            case SetStep():
                self.apply_set(step)
                self.go(edges["next"])
            case Handoff():
                ready = True if self.handoff_ready is None else self.handoff_ready(self.lead)
                if ready is True:
                    self.result.effects.append(OpenHandoff(step.id, step.owner, step.team))
                    self.lead = replace(self.lead, stage="sql-pending")
                    self.trace(step.id, "handoff", "handed-off")
                elif isinstance(ready, str) and ready:
                    self.trace(step.id, "handoff", "cooling-off", why=ready, reason=COOLING_OFF)
                elif isinstance(ready, NotReady):
                    self.trace(step.id, "handoff", "not-ready", why=ready.why, reason=ready.reason)
                else:
                    self.trace(step.id, "handoff", "not-ready")
                self.go(edges["next"])
            case Notify():
                n = step.notify
                self.visit(step.id)
                self.result.effects.append(NotifySomeone(step.id, n.email, n.template, n.subject, n.webhook))
                self.trace(step.id, "notify", "notified")
                self.go(edges["next"])
            case Split():
                variants = self.state.memory.setdefault("variants", {})
                name = variants.get(step.id) or split_variant(
                    dict(step.split), lead_id=self.lead.id, scenario=self.plan.name, step_id=step.id
                )
                variants[step.id] = name
                self.trace(step.id, "split", f"variant:{name}")
                self.go(edges[name])
            case Enroll():
                self.result.effects.append(EnrollInto(step.id, step.enroll))
                self.trace(step.id, "enroll", f"to:{step.enroll}")
                self.finish("completed", f"moved to {step.enroll}")
            case End():
                self.trace(step.id, "end", "left")
                self.finish("completed", None)
            case _:
                assert_never(step)

    def pause(self, step: Wait, edges) -> None:
        waiting = self.state.waiting
        if waiting and waiting.get("step_id") == step.id:
            self.trace(step.id, "wait", "waited")
            self.go(edges["next"])
            return
        deadline = self.now + step.wait
        if step.window is not None:
            deadline = into_window(deadline, step.window, self.lead.timezone)
        self.wait_until(step.id, "wait", deadline)
        self.trace(step.id, "wait", "waiting", until=deadline.isoformat())

    def await_condition(self, step: WaitUntil, edges) -> None:
        waiting = self.state.waiting
        if self.holds(step.wait_until):
            self.trace(step.id, "wait_until", "woken" if waiting else "met")
            self.go(edges["next"])
            return
        types = event_types_of(step.wait_until)
        if waiting and waiting.get("step_id") == step.id:
            deadline = ensure_utc(datetime.fromisoformat(waiting["deadline"]))
            if self.now >= deadline:
                self.trace(step.id, "wait_until", "timeout")
                self.go(edges["on_timeout"])
            else:
                self.state.due_at = self.next_wake(types, deadline)  # woken for nothing (an unrelated event): keep waiting
            return
        deadline = self.now + step.timeout
        self.wait_until(step.id, "wait_until", deadline, types, state_kinds_of(step.wait_until))
        self.state.due_at = self.next_wake(types, deadline)
        self.trace(step.id, "wait_until", "waiting", until=deadline.isoformat())

    def next_wake(self, types: frozenset[str], deadline: datetime) -> datetime:
        """When to look again: the deadline, or sooner, when an awaited kind of event already stored happened
        after `now` (it arrived while this tick ran, stamped later than the tick's clock)."""
        later = [e.occurred_at for e in self.events if e.type in types and self.now < e.occurred_at < deadline]
        return min(later, default=deadline)

    def apply_set(self, step: SetStep) -> None:
        action = step.set
        tags = (action.tag,) if isinstance(action.tag, str) else tuple(action.tag or ())
        self.result.effects.append(ChangeLead(step.id, action.stage, dict(action.field or {}), tags))
        self.lead = replace(
            self.lead,
            stage=action.stage or self.lead.stage,
            fields={**self.lead.fields, **(action.field or {})},
            tags=self.lead.tags | frozenset(tags),
        )
        self.trace(step.id, "set", "set", **{k: v for k, v in (("stage", action.stage), ("tags", list(tags))) if v})


def advance(
    plan: Plan,
    state: EnrollmentState,
    lead: LeadFacts,
    events: Sequence[EventFact],
    now: datetime,
    *,
    handoff_ready: HandoffReady | None = None,
) -> Advance:
    """Run the enrollment's steps while it is due, until it waits or leaves."""
    return _Run(plan, state, lead, events, now, handoff_ready).run()


def state_wait_holds(plan: Plan, state: EnrollmentState, lead: LeadFacts, events: Sequence[EventFact], now: datetime) -> bool:
    """Whether this enrollment sleeps at a `wait_until` that reads the lead's state and now holds: what a change
    of the lead asks before waking it (relance.wakes for the database, relance.simulation.simulator for its virtual world)."""
    waiting = state.waiting or {}
    if state.status != "active" or waiting.get("kind") != "wait_until" or (state.due_at is not None and state.due_at <= now):
        return False
    step = plan.steps.get(waiting.get("step_id"))
    if not isinstance(step, WaitUntil) or not state_kinds_of(step.wait_until):
        return False  # a wait on events only: their arrival wakes it (`event_types`), a change of the lead cannot
    return holds(step.wait_until, lead=lead, events=events, now=now, since=state.entered_at or now, scenario=plan.name)
