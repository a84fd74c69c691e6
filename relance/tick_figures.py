"""What a tick did: its figures (`TickReport`), those read from the store once its work is done, and its log line.

docs/ticks.md defines every figure as the rows of the database it counts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from relance.advancing import BatchResult
from relance.report import standing as where_now
from relance.settling import DeliveryResult
from relance.store.tables import Enrollment, Outbox, StepLog


@dataclass
class TickReport:
    """What one tick of one scenario did, and where its leads stand after it (see docs/ticks.md for each figure)."""

    scenario: str
    entered: int = 0  # enrollments whose first step this tick ran: segment entries now, other doors since the last tick
    advanced: int = 0  # "due": enrollments this tick claimed and advanced
    batches: int = 0
    sent: int = 0  # messages this tick's steps wrote that left in its batches
    skipped: int = 0
    failed: int = 0
    unknown: int = 0  # handed over with no answer this tick: may have left, never resent by itself
    pending: int = 0  # messages of batches whose delivery failed, still pending once the tick is done
    leftovers: int = 0  # other pending messages this tick sent: hand-off and SLA emails, what earlier runs left
    cut_off: int = 0  # messages an earlier run left `sending` (it died mid-send), now `unknown`
    enrollments_failed: int = 0  # enrollments that left on an error of their own (the others went on)
    deferred: int = 0  # emails sending.yaml held back this tick: they wait for the next allowed moment
    withheld: int = 0  # emails sending.yaml held back this tick that their scenario skips (`held: skip`)
    held: Counter = field(default_factory=Counter)  # both, by reason
    waiting: int | None = None  # active enrollments of the scenario in a wait after the tick (the enrollments table)
    counts: Counter = field(default_factory=Counter)  # this tick's step-log outcomes: (step_id, outcome) -> n
    standing: dict[str, tuple[int, int]] = field(default_factory=dict)  # step -> (active here, of which waiting), after
    undelivered_ids: list[int] = field(default_factory=list)  # the outbox rows of batches whose delivery failed

    def add(self, batch: BatchResult, delivery: DeliveryResult) -> None:
        """Count one batch and its delivery."""
        self.batches += 1
        self.advanced += batch.advanced
        self.enrollments_failed += len(batch.failed)
        self.counts.update(batch.counts)
        self.sent += delivery.sent
        self.skipped += delivery.skipped
        self.failed += delivery.failed
        self.unknown += delivery.unknown
        self.add_holds(delivery)

    def add_holds(self, delivery: DeliveryResult) -> None:
        """Count what the sending policy held back in a delivery (a batch's, or the leftovers')."""
        self.deferred += delivery.deferred
        self.withheld += delivery.withheld
        self.held.update(delivery.held)

    @property
    def handed_off(self) -> int:
        """Leads this tick handed to sales (hand-off steps whose lead was ready)."""
        return sum(n for (_, outcome), n in self.counts.items() if outcome == "handed-off")

    def failed_at(self) -> Counter:
        """Enrollments that left on an error this tick, by the step they were at."""
        return Counter({step: n for (step, outcome), n in self.counts.items() if outcome == "failed"})

    def as_dict(self) -> dict[str, Any]:
        """The figures a tick flow run returns."""
        return {
            "scenario": self.scenario, "entered": self.entered, "advanced": self.advanced, "batches": self.batches,
            "sent": self.sent, "skipped": self.skipped, "failed": self.failed, "unknown": self.unknown,
            "pending": self.pending, "leftovers": self.leftovers, "cut_off": self.cut_off, "enrollments_failed": self.enrollments_failed,
            "waiting": self.waiting, "deferred": self.deferred, "withheld": self.withheld, "handed_off": self.handed_off,
        }


def step_log_mark(engine: Engine) -> int:
    """The newest step-log row when a tick starts: every row the tick writes comes after it."""
    with engine.connect() as connection:
        return connection.execute(select(func.coalesce(func.max(StepLog.id), 0))).scalar_one()


def count_tick(session: Session, report: TickReport, *, now: datetime, mark: int, standing: bool = True) -> TickReport:
    """Fill in the figures read from the database once the tick's work is done: `entered` (enrollments whose
    first step ran in this tick: a step-log row of this tick, none before it) and, with `standing`, where the
    scenario's leads stand now (`waiting`, per step: this reads every active enrollment of the scenario), and
    `pending`: the messages of batches whose delivery failed that are still pending."""
    log, earlier = StepLog.__table__, StepLog.__table__.alias("earlier")
    first_steps = (
        select(func.count(func.distinct(log.c.enrollment_id)))
        .where(log.c.id > mark, log.c.scenario == report.scenario, log.c.kind != "enter", log.c.at == now,
               ~select(earlier.c.id).where(earlier.c.enrollment_id == log.c.enrollment_id, earlier.c.id <= mark,
                                           earlier.c.kind != "enter").exists())
    )
    report.entered = session.execute(first_steps).scalar_one()
    ids = report.undelivered_ids
    report.pending = sum(session.execute(select(func.count()).select_from(Outbox).where(
        Outbox.id.in_(ids[start:start + 500]), Outbox.status == "pending")).scalar_one() for start in range(0, len(ids), 500))
    if standing:
        report.standing = {step: here for (_, step), here in where_now(session, report.scenario).items()}
        report.waiting = sum(waiting for _, waiting in report.standing.values())
    return report


def count_due(engine: Engine, scenario: str, *, now: datetime) -> int:
    """Enrollments of the scenario due by `now` when the tick starts (what its progress counts against)."""
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(Enrollment).where(
            Enrollment.scenario == scenario, Enrollment.status == "active", Enrollment.due_at <= now)).scalar_one()


def _leads(n: int) -> str:
    return f"{n} {'lead' if n == 1 else 'leads'}"


def _left_on_error(report: TickReport) -> str:
    at = ", ".join(f"{step} {n}" for step, n in report.failed_at().most_common(3))
    return f"{_leads(report.enrollments_failed)} left on an error" + (f" (at step {at})" if at else "")


def headline(report: TickReport, *, undelivered_batches: int = 0) -> str:
    """The tick at a glance, for its run's state message: `6 entered, 6 sent, 5 waiting, 1 handed off`, then what
    went wrong, if anything."""
    words = [f"{report.entered} entered", f"{report.sent} sent"]
    words += [f"{report.waiting} waiting"] * (report.waiting is not None)
    words += [f"{report.handed_off} handed off"] * bool(report.handed_off)
    words += [f"{report.deferred} deferred by sending.yaml"] * bool(report.deferred)
    words += [f"{report.failed} failed"] * bool(report.failed)
    words += [f"{report.unknown} with an unknown outcome"] * bool(report.unknown)
    words += [_left_on_error(report)] * bool(report.enrollments_failed)
    words += [f"{undelivered_batches} {'batch' if undelivered_batches == 1 else 'batches'} not delivered"] * bool(undelivered_batches)
    return ", ".join(words)


def summary(report: TickReport, *, undelivered_batches: int = 0) -> str:
    """What the tick did, in the operator's words."""
    words = (
        f"{report.scenario}: {report.entered} entered, {report.advanced} due, {report.batches} "
        f"{'batch' if report.batches == 1 else 'batches'}, {report.sent} sent"
    )
    if report.waiting is not None:  # counted unless the tick was told not to (benchmarks)
        words += f", {report.waiting} waiting"
    if report.handed_off:
        words += f", {report.handed_off} handed off to sales"
    if report.skipped:
        words += f", {report.skipped} skipped (suppressed)"
    if report.deferred or report.withheld:
        reasons = ", ".join(f"{why} {n}" for why, n in report.held.most_common(3))
        held = [f"{report.deferred} deferred"] * bool(report.deferred) + [f"{report.withheld} skipped"] * bool(report.withheld)
        words += f", {' and '.join(held)} by sending.yaml ({reasons})"
    if report.failed:
        words += f", {report.failed} failed"
    if report.unknown:
        words += f", {report.unknown} with an unknown outcome (handed over, no answer: not resent)"
    if report.pending:
        words += f", {report.pending} still pending (they go with the next tick)"
    if report.enrollments_failed:
        words += f", {_left_on_error(report)} (see lead show)"
    if report.cut_off:
        words += f", {report.cut_off} cut off mid-send by a run that died (now unknown: relance outbox resolve)"
    if report.leftovers:
        words += (f", {report.leftovers} other pending {'message' if report.leftovers == 1 else 'messages'} sent "
                  "(hand-off and SLA emails, what earlier runs left)")
    if undelivered_batches:
        words += f", {undelivered_batches} {'batch' if undelivered_batches == 1 else 'batches'} not delivered after every retry (their emails stay pending for the next tick)"
    return words
