"""The projected funnel of a simulation: per step, then totals; as rich tables or a dict."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Group
from rich.table import Table

from relance.scenario.model import step_tag
from relance.scenario.plan import Plan
from relance.simulation.rates import EngagementRates


@dataclass(frozen=True)
class StepReport:
    """One step of the funnel.

    `reached`: distinct leads that arrived at the step (a goal met right there included);
    `outcomes`: how each of them last passed through it (sum = reached; `waiting` = still there);
    `left`: leads whose enrollment ended here, by reason (completed, exited, failed, to SCENARIO);
    `inside`: leads still enrolled and positioned here when the simulation ends.
    """

    step_id: str
    kind: str
    reached: int
    outcomes: dict[str, int]
    left: dict[str, int]
    inside: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.step_id, "kind": self.kind, "reached": self.reached, "outcomes": dict(self.outcomes),
                "left": dict(self.left), "inside": self.inside}


@dataclass(frozen=True)
class Totals:
    """Where every entered lead is at the end: entered = completed + moved + exited + failed + inside."""

    entered: int
    completed: int  # went past the last step or reached `end`
    moved: int  # left through an `enroll` step (see SimulationReport.moved_to)
    exited: int  # an exit_when goal took them out
    failed: int  # the interpreter reported an error or left the enrollment stuck
    inside: int  # still enrolled when the simulation ends
    emails_sent: int
    emails_suppressed: int  # a send step reached after the lead had unsubscribed
    handoffs: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SimulationReport:
    scenario: str
    plan_hash: str
    leads: int
    days: int
    seed: int
    start: datetime
    end: datetime
    rates: EngagementRates
    steps: tuple[StepReport, ...]
    totals: Totals
    moved_to: dict[str, int]  # scenario -> leads sent there by `enroll` steps (not simulated)
    engagement: dict[str, int]  # simulated events by type, within the horizon

    def step(self, step_id: str) -> StepReport:
        return next(step for step in self.steps if step.step_id == step_id)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (`relance simulate --json`)."""
        return {
            "scenario": self.scenario, "plan_hash": self.plan_hash, "leads": self.leads, "days": self.days,
            "seed": self.seed, "start": self.start.isoformat(), "end": self.end.isoformat(),
            "rates": self.rates.model_dump(), "steps": [step.as_dict() for step in self.steps],
            "totals": self.totals.as_dict(), "moved_to": dict(self.moved_to), "engagement": dict(self.engagement),
        }


@dataclass
class Tally:
    """Counts gathered while the simulation runs, turned into a report at the end."""

    last_outcome: dict[str, dict[int, str]] = field(default_factory=lambda: defaultdict(dict))
    left: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    moved_to: Counter = field(default_factory=Counter)
    engagement: Counter = field(default_factory=Counter)
    entered: int = 0
    emails_sent: int = 0
    emails_suppressed: int = 0
    handoffs: int = 0

    def passed(self, step_id: str, enrollment: int, outcome: str) -> None:
        self.last_outcome[step_id][enrollment] = outcome

    def ended(self, step_id: str, reason: str) -> None:
        self.left[step_id][reason] += 1

    def steps(self, plan: Plan, inside: Counter) -> tuple[StepReport, ...]:
        return tuple(
            StepReport(
                step_id=step_id,
                kind=step_tag(plan.step(step_id)) or "?",
                reached=len(self.last_outcome.get(step_id, {})),
                outcomes=dict(sorted(Counter(self.last_outcome.get(step_id, {}).values()).items())),
                left=dict(sorted(self.left.get(step_id, Counter()).items())),
                inside=inside.get(step_id, 0),
            )
            for step_id in plan.order
        )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in counts.items()) or "-"


def _share(n: int, of: int) -> str:
    return f"{100 * n / of:.1f}%" if of else "-"


def render_report(report: SimulationReport) -> Group:
    """The funnel table and the totals table, ready for `rich.console.Console.print`."""
    entered = report.totals.entered
    funnel = Table(
        title=f"Projected funnel: {report.scenario} ({report.leads:,} leads, {report.days} days, seed {report.seed})",
        title_justify="left",
    )
    funnel.add_column("Step")
    funnel.add_column("Kind")
    funnel.add_column("Reached", justify="right")
    funnel.add_column("% entered", justify="right")
    funnel.add_column("Outcomes")
    funnel.add_column("Left here")
    funnel.add_column("Inside", justify="right")
    for step in report.steps:
        funnel.add_row(step.step_id, step.kind, f"{step.reached:,}", _share(step.reached, entered),
                       _counts(step.outcomes), _counts(step.left), f"{step.inside:,}")

    totals = Table(title="Totals", title_justify="left", show_header=False)
    totals.add_column("What")
    totals.add_column("Leads", justify="right")
    totals.add_column("%", justify="right")
    t = report.totals
    rows = [("entered", t.entered), ("completed", t.completed), ("moved to another scenario", t.moved)]
    rows += [(f"  to {scenario}", n) for scenario, n in report.moved_to.items()]
    rows += [("exited by a goal", t.exited), ("failed", t.failed), ("still inside at the end", t.inside),
             ("handed off to sales", t.handoffs)]
    for label, n in rows:
        totals.add_row(label, f"{n:,}", _share(n, entered))
    totals.add_row("emails sent", f"{t.emails_sent:,}", "")
    if t.emails_suppressed:
        totals.add_row("emails not sent (unsubscribed)", f"{t.emails_suppressed:,}", "")
    for event_type, n in report.engagement.items():
        totals.add_row(f"simulated {event_type}", f"{n:,}", _share(n, t.emails_sent) + " of sent" if t.emails_sent else "")
    return Group(funnel, totals)
