"""The tick: one sequence, run by the Prefect flow (with its tasks) and inline (tests, benchmarks, the simulator's checks).

register -> enroll -> advance a batch -> deliver it (until nothing is due) -> deliver leftovers -> count -> publish.
A batch whose delivery fails (after the flow's retries) leaves its emails pending and the tick goes on; the tick
then ends with a TickError naming the batches not delivered. docs/ticks.md says what each figure counts.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from relance.advancing import BatchResult, advance_due
from relance.delivery import deliver, deliver_pending
from relance.email.templates import TemplateLibrary
from relance.email.transports import Transport, make_transport
from relance.enrollment import enroll_due
from relance.library import Library, load_library
from relance.plans import sync_scenarios
from relance.settings import Settings
from relance.settling import DeliveryResult
from relance.store.tables import StepLog

LOGGER = logging.getLogger("relance.tick")  # the inline tick's log; the flow's goes to its run logger


class TickError(RuntimeError):
    """The tick could not do all its work; the message says what is left and where."""


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
    leftovers: int = 0  # other pending messages this tick sent: hand-off and SLA emails, what earlier runs left
    cut_off: int = 0  # messages an earlier run left `sending` (it died mid-send), now `unknown`
    enrollments_failed: int = 0  # enrollments that left on an error of their own (the others went on)
    waiting: int | None = None  # active enrollments of the scenario in a wait after the tick (the enrollments table)
    counts: Counter = field(default_factory=Counter)  # this tick's step-log outcomes: (step_id, outcome) -> n
    standing: dict[str, tuple[int, int]] = field(default_factory=dict)  # step -> (active here, of which waiting), after

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

    def as_dict(self) -> dict[str, Any]:
        """The figures a tick flow run returns."""
        return {
            "scenario": self.scenario, "entered": self.entered, "advanced": self.advanced, "batches": self.batches,
            "sent": self.sent, "skipped": self.skipped, "failed": self.failed, "unknown": self.unknown,
            "leftovers": self.leftovers, "cut_off": self.cut_off, "enrollments_failed": self.enrollments_failed,
            "waiting": self.waiting,
        }


def step_log_mark(engine: Engine) -> int:
    """The newest step-log row when a tick starts: every row the tick writes comes after it."""
    with engine.connect() as connection:
        return connection.execute(select(func.coalesce(func.max(StepLog.id), 0))).scalar_one()


def count_tick(engine: Engine, report: TickReport, *, now: datetime, mark: int, standing: bool = True) -> TickReport:
    """Fill in the figures read from the database once the tick's work is done: `entered` (enrollments whose
    first step ran in this tick: a step-log row of this tick, none before it) and, with `standing`, where the
    scenario's leads stand now (`waiting`, per step: this reads every active enrollment of the scenario)."""
    from relance.report import standing as where_now

    log, earlier = StepLog.__table__, StepLog.__table__.alias("earlier")
    first_steps = (
        select(func.count(func.distinct(log.c.enrollment_id)))
        .where(log.c.id > mark, log.c.scenario == report.scenario, log.c.kind != "enter", log.c.at == now,
               ~select(earlier.c.id).where(earlier.c.enrollment_id == log.c.enrollment_id, earlier.c.id <= mark,
                                           earlier.c.kind != "enter").exists())
    )
    with Session(engine) as session:
        report.entered = session.execute(first_steps).scalar_one()
        if standing:
            report.standing = {step: here for (_, step), here in where_now(session, report.scenario).items()}
            report.waiting = sum(waiting for _, waiting in report.standing.values())
    return report


def summary(report: TickReport, *, undelivered_batches: int = 0) -> str:
    """What the tick did, in the operator's words."""
    words = (
        f"{report.scenario}: {report.entered} entered, {report.advanced} due, {report.batches} "
        f"{'batch' if report.batches == 1 else 'batches'}, {report.sent} sent"
    )
    if report.waiting is not None:  # counted unless the tick was told not to (benchmarks)
        words += f", {report.waiting} waiting"
    if report.skipped:
        words += f", {report.skipped} skipped (suppressed)"
    if report.failed:
        words += f", {report.failed} failed"
    if report.unknown:
        words += f", {report.unknown} with an unknown outcome (handed over, no answer: not resent)"
    if report.enrollments_failed:
        words += f", {report.enrollments_failed} {'lead' if report.enrollments_failed == 1 else 'leads'} left on an error (see lead show)"
    if report.cut_off:
        words += f", {report.cut_off} cut off mid-send by a run that died (now unknown: relance outbox resolve)"
    if report.leftovers:
        words += (f", {report.leftovers} other pending {'message' if report.leftovers == 1 else 'messages'} sent "
                  "(hand-off and SLA emails, what earlier runs left)")
    if undelivered_batches:
        words += f", {undelivered_batches} {'batch' if undelivered_batches == 1 else 'batches'} not delivered after every retry (their emails stay pending for the next tick)"
    return words


@dataclass(frozen=True)
class TickSteps:
    """The work a tick sequences, called with the arguments `run_tick` gives: the flow passes its Prefect tasks
    (delivery with its retries), `run_tick_inline` the plain functions. A step that raises ends the tick, except
    a batch's delivery: its emails stay pending, the tick goes on and ends with a TickError naming it."""

    register: Callable[..., dict[str, int]]  # (engine, settings, *, now, library)
    enroll: Callable[..., int]  # (engine, settings, *, scenario, now, library)
    advance: Callable[..., BatchResult]  # (engine, settings, *, scenario, now, limit, library)
    deliver: Callable[..., DeliveryResult]  # (engine, settings, *, outbox_ids, now)
    deliver_leftovers: Callable[..., DeliveryResult]  # (engine, settings, *, now)
    count: Callable[..., TickReport]  # (engine, report, *, now, mark)
    publish: Callable[..., Any] = lambda report, engine, *, order, undelivered_batches: None


def run_tick(engine: Engine, settings: Settings, *, scenario: str, now: datetime, library: Library, limit: int,
             steps: TickSteps, logger: logging.Logger | logging.LoggerAdapter) -> TickReport:
    """Run one tick of `scenario` with these steps, saying in `logger` what the operator should know."""
    mark = step_log_mark(engine)  # what this tick writes to the step log comes after it: its figures count that
    steps.register(engine, settings, now=now, library=library)
    report = TickReport(scenario=scenario)
    steps.enroll(engine, settings, scenario=scenario, now=now, library=library)
    undelivered: list[str] = []
    while (batch := steps.advance(engine, settings, scenario=scenario, now=now, limit=limit, library=library)).advanced:
        for problem in batch.failed:
            logger.warning("%s: lead left the scenario on an error: %s", scenario, problem)
        report.add(batch, _deliver_batch(engine, settings, batch, scenario=scenario, now=now, steps=steps,
                                         logger=logger, undelivered=undelivered, number=report.batches + 1))
    _deliver_leftovers(engine, settings, report, now=now, steps=steps, logger=logger)
    report = steps.count(engine, report, now=now, mark=mark)
    steps.publish(report, engine, order=library.plans[scenario].order, undelivered_batches=len(undelivered))
    logger.info(summary(report, undelivered_batches=len(undelivered)))
    if undelivered:
        raise TickError(f"{scenario}: emails not delivered yet, they stay pending for the next tick: " + "; ".join(undelivered))
    return report


def _deliver_batch(engine: Engine, settings: Settings, batch: BatchResult, *, scenario: str, now: datetime,
                   steps: TickSteps, logger, undelivered: list[str], number: int) -> DeliveryResult:
    """Deliver one batch's emails; a delivery that fails is noted in `undelivered` and counts nothing."""
    if not batch.outbox_ids:  # a batch of waits and branches owes no email
        return DeliveryResult()
    try:
        done = steps.deliver(engine, settings, outbox_ids=batch.outbox_ids, now=now)
    except Exception as exc:  # noqa: BLE001 - the other batches' emails should still leave; the tick fails at the end
        undelivered.append(f"batch {number} ({len(batch.outbox_ids)} emails): {exc}")
        return DeliveryResult()
    if done.unknown or done.failed:
        logger.warning("%s: %d message(s) with an unknown outcome (not resent), %d failed: %s", scenario,
                       done.unknown, done.failed, "; ".join(done.errors[:3]))
    return done


def _deliver_leftovers(engine: Engine, settings: Settings, report: TickReport, *, now: datetime, steps: TickSteps,
                       logger) -> None:
    """Send what earlier runs left pending and the hand-off and SLA emails written since; say what was cut off."""
    leftovers = steps.deliver_leftovers(engine, settings, now=now)
    report.leftovers, report.cut_off = leftovers.sent, len(leftovers.cut_off)
    if leftovers.cut_off:
        logger.warning("%d message(s) were cut off mid-send by a run that died (outbox %s): their outcome is unknown, "
                       "they are not resent; check the transport's logs, then `relance outbox resolve ID ... --as pending|failed`",
                       len(leftovers.cut_off), ", ".join(map(str, leftovers.cut_off[:10])))
    if leftovers.sent or leftovers.failed or leftovers.retryable:
        logger.info("other pending messages (hand-off and SLA emails, what earlier runs left): %d sent, "
                    "%d failed or expired, %d still pending%s",
                    leftovers.sent, leftovers.failed, leftovers.retryable,
                    f" ({'; '.join(leftovers.errors[:3])})" if leftovers.errors else "")


def run_tick_inline(
    engine: Engine, settings: Settings, *, scenario: str, now: datetime, library: Library | None = None,
    transport: Transport | None = None, templates: TemplateLibrary | None = None, batch_size: int | None = None,
    standing: bool = True,
) -> TickReport:
    """The tick `flows/tick.py` runs, with plain functions instead of Prefect tasks (and no retries): for tests,
    benchmarks and the simulator's checks. `standing=False` skips counting where every enrollment stands (`waiting`
    stays None): the benchmarks measure the work that grows with what is due, not with what is enrolled."""
    library = library or load_library(settings)
    transport = transport or make_transport(settings)
    templates = templates or TemplateLibrary(settings.templates_dir)
    steps = TickSteps(
        register=sync_scenarios, enroll=enroll_due, advance=advance_due,
        deliver=functools.partial(deliver, transport=transport, templates=templates),
        deliver_leftovers=functools.partial(deliver_pending, transport=transport, templates=templates),
        count=functools.partial(count_tick, standing=standing),
    )
    return run_tick(engine, settings, scenario=scenario, now=now, library=library,
                    limit=batch_size or settings.batch_size, steps=steps, logger=LOGGER)
