"""`relance simulate`: the real interpreter on a virtual clock, with synthetic engagement.

No database, no Prefect, no transport: leads are synthetic `LeadFacts`, sends are counted,
and what a lead does after an email is drawn from `EngagementRates`. The loop is event
driven: a heap holds arrivals, due enrollments and simulated events by time, so 60 days
cost what happens in them, not 86,400 minutes. One seed gives one result.

Choices:
- leads arrive uniformly over the first `spread` (a week by default, `timedelta(0)` for
  all at `start`), which is how a campaign's entries trickle in;
- every synthetic lead enters (reentry is moot: each enters once); an event trigger's own
  event is in the lead's history at entry; a segment trigger redraws leads until they match;
- a `handoff` hands off when scoring.yaml's handoff point is met (score and grade), and
  moves the lead to `sql-pending` as a tick does; `enroll` counts the lead as moved to
  that scenario, which is not simulated;
- an unsubscribed lead's later emails are counted as suppressed and draw no reactions;
- with a `scoring` config, simulated events earn its behaviour points (no decay) and, as in ingestion, may make
  the lead an MQL or hand it to sales at the hand-off point (score and grade); a change that makes a `wait_until`
  on the score, temperature or stage hold wakes it, as a change of the lead does in a tick (relance.wakes).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Callable

from relance.clock import ensure_utc
from relance.engine.conditions import holds
from relance.engine.interpreter import advance, enter, state_wait_holds
from relance.engine.types import EnrollInto, EnrollmentState, EventFact, OpenHandoff, LeadFacts, SendEmail
from relance.sales import HANDOFF_STAGES
from relance.scenario.model import EventTrigger, SegmentTrigger
from relance.scenario.plan import Plan
from relance.scoring.config import ScoringConfig
from relance.scoring.ledger import mql_reached
from relance.scoring.rules import behaviour_points
from relance.simulation.engagement import Engagement, Targets, example_properties
from relance.simulation.funnel import SimulationReport, Tally, Totals, render_report
from relance.simulation.population import arrival_times, synthetic_lead
from relance.simulation.rates import EngagementRates, parse_rates
from relance.suppression import SUPPRESSING_EVENTS

__all__ = ["EngagementRates", "SimulationReport", "parse_rates", "render_report", "simulate"]

DEFAULT_SPREAD = timedelta(days=7)

# Heap entry kinds; at the same instant an event lands before the enrollment it may wake runs.
_EVENT, _ARRIVAL, _DUE = 0, 1, 2


def simulate(
    plan: Plan,
    *,
    leads: int,
    days: int,
    seed: int,
    rates: EngagementRates | None = None,
    start: datetime,
    spread: timedelta = DEFAULT_SPREAD,
    scoring: ScoringConfig | None = None,
) -> SimulationReport:
    """Run `leads` synthetic leads through a plan for `days` of virtual time; pure and deterministic."""
    if leads < 0:
        raise ValueError(f"simulate {plan.name}: --leads must be 0 or more, not {leads}")
    if days <= 0:
        raise ValueError(f"simulate {plan.name}: --days must be at least 1, not {days}")
    start = ensure_utc(start)
    end = start + timedelta(days=days)
    run = _Simulation(plan, rates=rates or EngagementRates(), scoring=scoring or ScoringConfig(), seed=seed, end=end)
    run.populate(leads, start=start, spread=max(timedelta(0), min(spread, end - start)))
    run.run()
    return run.report(leads=leads, days=days, seed=seed, start=start)


class _Simulation:
    """The virtual world: one enrollment per synthetic lead, a heap of what happens next."""

    def __init__(self, plan: Plan, *, rates: EngagementRates, scoring: ScoringConfig, seed: int, end: datetime) -> None:
        self.plan, self.rates, self.scoring, self.end = plan, rates, scoring, end
        # Separate streams: changing the rates never changes who the leads are or when they arrive.
        self.population_rng = random.Random(f"{seed}:population")
        self.reaction_rng = random.Random(f"{seed}:engagement")
        self.engagement = Engagement(scenario=plan.name, rates=rates, targets=Targets.of(plan))
        self.people: list[LeadFacts] = []
        self.states: list[EnrollmentState | None] = []
        self.histories: list[list[EventFact]] = []
        self.generations: list[int] = []  # a due entry is stale once an event has re-queued its enrollment
        self.suppressed: list[bool] = []
        self.tally = Tally()
        self.heap: list[tuple] = []
        self.sequence = 0
        self.trigger_event: EventTrigger | None = None

    def handoff_ready(self, facts: LeadFacts) -> bool:
        return self.scoring.meets(self.scoring.handoff, score=facts.score, grade=facts.grade)

    def push(self, at: datetime, kind: int, index: int, payload: object) -> None:
        self.sequence += 1
        heapq.heappush(self.heap, (at, kind, self.sequence, index, payload))

    def populate(self, count: int, *, start: datetime, spread: timedelta) -> None:
        stage, accepts, self.trigger_event = _entry_rules(self.plan)
        rng = self.population_rng
        self.people = [synthetic_lead(i, rng, scoring=self.scoring, stage=stage, accepts=accepts) for i in range(count)]
        self.states = [None] * count
        self.histories = [[] for _ in range(count)]
        self.generations = [0] * count
        self.suppressed = [False] * count
        for index, at in enumerate(arrival_times(count, start=start, spread=spread, rng=rng)):
            self.push(at, _ARRIVAL, index, None)

    def run(self) -> None:
        heap, end = self.heap, self.end
        while heap and heap[0][0] <= end:
            now, kind, _, index, payload = heapq.heappop(heap)
            if kind == _EVENT:
                self.receive(index, payload, now)
            elif kind == _ARRIVAL:
                self.arrive(index, now)
            elif payload == self.generations[index]:
                self.advance(index, now)

    def arrive(self, index: int, now: datetime) -> None:
        if self.trigger_event is not None:
            self.histories[index].append(EventFact(self.trigger_event.event, now, example_properties(self.trigger_event.where)))
        self.states[index] = enter(self.plan, self.people[index], now)
        self.tally.entered += 1
        self.advance(index, now)

    def receive(self, index: int, event: EventFact, now: datetime) -> None:
        """A simulated event happens: record it, score it, wake the enrollment if it waits for it."""
        self.histories[index].append(event)
        self.tally.engagement[event.type] += 1
        if event.type == "unsubscribed":
            self.suppressed[index] = True
        # every simulated open is a first open, every click a person's first of its link (relance.engagement)
        points = behaviour_points(self.scoring, event.type, event.properties) if self.scoring.behaviour else 0
        if points:
            lead = self.people[index]
            lead = replace(lead, score=lead.score + points, temperature=self.scoring.temperature_of(lead.score + points))
            self.people[index] = self.cross_lines(lead) if event.type not in SUPPRESSING_EVENTS else lead
        state = self.states[index]
        if state is None or state.status != "active" or not state.waiting or state.due_at is None or state.due_at <= now:
            return
        # an awaited event wakes the wait; so do points that make a wait on the score, temperature or stage hold
        awaited = event.type in state.waiting.get("event_types", ())
        if awaited or (points and state_wait_holds(self.plan, state, self.people[index], self.histories[index], now)):
            state.due_at = now
            self.generations[index] += 1
            self.push(now, _DUE, index, self.generations[index])

    def cross_lines(self, lead: LeadFacts) -> LeadFacts:
        """The MQL line and the hand-off point an event's points may cross, as ingestion moves the lead's stage."""
        if mql_reached(self.scoring, stage=lead.stage, score=lead.score, grade=lead.grade):
            lead = replace(lead, stage="mql")
        if lead.stage in HANDOFF_STAGES and self.handoff_ready(lead):
            self.tally.handoffs += 1
            lead = replace(lead, stage="sql-pending")
        return lead

    def advance(self, index: int, now: datetime) -> None:
        """Run the interpreter on one due enrollment and carry out what it returns."""
        state = self.states[index]
        if state is None or state.status != "active":
            return
        try:
            outcome = advance(self.plan, state, self.people[index], self.histories[index], now, handoff_ready=self.handoff_ready)
        except Exception as exc:
            raise RuntimeError(f"simulate {self.plan.name}: lead {index + 1} at step {state.step_id} ({now:%Y-%m-%d %H:%M}): {exc}") from exc
        state = self.states[index] = outcome.state
        lead = outcome.lead or self.people[index]
        moved_to = None
        for effect in outcome.effects:
            if isinstance(effect, SendEmail):
                self.send(index, effect, now)
            elif isinstance(effect, OpenHandoff):
                self.tally.handoffs += self.people[index].stage != "sql-pending"  # an open hand-off is not opened twice
                lead = replace(lead, stage="sql-pending")  # as a tick does
            elif isinstance(effect, EnrollInto):
                moved_to = effect.scenario
        if lead.temperature != (temperature := self.scoring.temperature_of(lead.score)):
            lead = replace(lead, temperature=temperature)
        self.people[index] = lead
        for trace in outcome.trace:
            self.tally.passed(trace.step_id, index, trace.outcome)

        if state.status == "active":
            if state.due_at is not None and state.due_at > now:
                self.push(state.due_at, _DUE, index, self.generations[index])
                return
            # Same guard as a tick's (relance.advancing): an enrollment left due would spin forever.
            state.status, state.due_at = "failed", None
            state.exit_reason = f"stuck at step {state.step_id}: the interpreter left it due"
        where = outcome.trace[-1].step_id if outcome.trace else (state.step_id or self.plan.first)
        if moved_to is not None:
            self.tally.ended(where, f"to {moved_to}")
            self.tally.moved_to[moved_to] += 1
        else:
            self.tally.ended(where, state.status)

    def send(self, index: int, effect: SendEmail, now: datetime) -> None:
        if self.suppressed[index]:
            self.tally.emails_suppressed += 1
            return
        self.tally.emails_sent += 1
        reactions = self.engagement.reactions(step_id=effect.step_id, enrollment_id=index + 1, sent_at=now, rng=self.reaction_rng)
        for reaction in reactions:
            if reaction.occurred_at <= self.end:
                self.push(reaction.occurred_at, _EVENT, index, reaction)

    def report(self, *, leads: int, days: int, seed: int, start: datetime) -> SimulationReport:
        return _report(self.plan, self.tally, self.states, leads=leads, days=days, seed=seed, start=start,
                       end=self.end, rates=self.rates)


def _entry_rules(plan: Plan) -> tuple[str | None, Callable[[LeadFacts], bool] | None, EventTrigger | None]:
    """(forced stage, segment filter, trigger event to record) for the plan's trigger."""
    trigger = plan.scenario.trigger
    if isinstance(trigger, SegmentTrigger):
        def accepts(lead: LeadFacts) -> bool:
            return holds(trigger.segment, lead=lead, events=[], now=_EPOCH, since=_EPOCH, scenario=plan.name)

        return None, accepts, None
    if trigger.event == "said_later":
        return "later", None, trigger
    return None, None, trigger


_EPOCH = ensure_utc(datetime(2000, 1, 1))


def _report(
    plan: Plan, tally: Tally, states: list[EnrollmentState | None], *, leads: int, days: int, seed: int,
    start: datetime, end: datetime, rates: EngagementRates,
) -> SimulationReport:
    reasons: Counter = Counter()
    for counts in tally.left.values():
        reasons.update(counts)
    inside = Counter(state.step_id for state in states if state is not None and state.status == "active")
    totals = Totals(
        entered=tally.entered,
        completed=reasons["completed"],
        moved=sum(tally.moved_to.values()),
        exited=reasons["exited"],
        failed=reasons["failed"],
        inside=sum(inside.values()),
        emails_sent=tally.emails_sent,
        emails_suppressed=tally.emails_suppressed,
        handoffs=tally.handoffs,
    )
    return SimulationReport(
        scenario=plan.name, plan_hash=plan.hash, leads=leads, days=days, seed=seed, start=start, end=end,
        rates=rates, steps=tally.steps(plan, inside), totals=totals, moved_to=dict(sorted(tally.moved_to.items())),
        engagement=dict(sorted(tally.engagement.items())),
    )
