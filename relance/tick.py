"""The tick: one sequence, run by the Prefect flow (with its tasks) and inline (tests, benchmarks, the simulator's checks).

register -> enroll -> advance a batch -> deliver it (until nothing is due) -> deliver leftovers -> count -> publish.
A batch whose delivery fails (after the flow's retries) leaves its emails pending and the tick goes on; the tick
then ends with a TickError naming the batches not delivered. docs/ticks.md says what each figure counts.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from sqlalchemy import Engine
from sqlmodel import Session

from relance.advancing import BatchResult, advance_due
from relance.delivery import deliver, deliver_pending
from relance.email.templates import TemplateLibrary
from relance.email.transports import Transport, make_transport
from relance.enrollment import enroll_due
from relance.plans import sync_scenarios
from relance.policy import SendingPolicy
from relance.settings import Settings
from relance.settling import DeliveryResult
from relance.tick_figures import TickReport, count_due, count_tick, step_log_mark, summary
from relance.workspace import Workspace

LOGGER = logging.getLogger("relance.tick")  # the inline tick's log; the flow's goes to its run logger


class TickError(RuntimeError):
    """The tick could not do all its work; the message says what is left and where, `report` what it did."""

    def __init__(self, message: str, report: TickReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class TickSteps:
    """The work a tick sequences, called with the arguments `run_tick` gives: the flow passes its Prefect tasks
    (delivery with its retries), `run_tick_inline` the plain functions. A step that raises ends the tick, except
    a batch's delivery: its emails stay pending, the tick goes on and ends with a TickError naming it."""

    register: Callable[..., dict[str, int]]  # (engine, settings, *, now, workspace)
    enroll: Callable[..., int]  # (engine, settings, *, scenario, now, workspace)
    advance: Callable[..., BatchResult]  # (engine, settings, *, scenario, now, limit, workspace)
    deliver: Callable[..., DeliveryResult]  # (engine, settings, *, outbox_ids, now, templates, manager, tally)
    deliver_leftovers: Callable[..., DeliveryResult]  # (engine, settings, *, now, templates, manager)
    count: Callable[..., TickReport]  # (engine, report, *, now, mark)
    publish: Callable[..., Any] = lambda report, engine, *, order, undelivered_batches, now=None: None
    progress: Callable[[int, int], Any] | None = None  # (advanced so far, due at the start), after each batch


def run_tick(engine: Engine, settings: Settings, *, scenario: str, now: datetime, workspace: Workspace,
             templates: TemplateLibrary, limit: int, steps: TickSteps,
             logger: logging.Logger | logging.LoggerAdapter) -> TickReport:
    """Run one tick of `scenario` with these steps, saying in `logger` what the operator should know."""
    manager = workspace.scoring.sales.manager  # told when staff mail fails for good
    policy = workspace.sending  # sending.yaml: what it holds back waits (or is skipped)
    mark = step_log_mark(engine)  # what this tick writes to the step log comes after it: its figures count that
    steps.register(engine, settings, now=now, workspace=workspace)
    report = TickReport(scenario=scenario)
    steps.enroll(engine, settings, scenario=scenario, now=now, workspace=workspace)
    due = count_due(engine, scenario, now=now) if steps.progress is not None else 0
    undelivered: list[str] = []
    while (batch := steps.advance(engine, settings, scenario=scenario, now=now, limit=limit, workspace=workspace)).advanced:
        for problem in batch.failed:
            logger.warning("%s: lead left the scenario on an error: %s", scenario, problem)
        report.add(batch, _deliver_batch(engine, settings, batch, scenario=scenario, now=now, templates=templates,
                                         manager=manager, policy=policy, steps=steps, logger=logger, undelivered=undelivered,
                                         report=report))
        if steps.progress is not None:
            steps.progress(report.advanced, max(due, report.advanced))
    _deliver_leftovers(engine, settings, report, now=now, templates=templates, manager=manager, policy=policy, steps=steps,
                       logger=logger)
    report = steps.count(engine, report, now=now, mark=mark)
    steps.publish(report, engine, order=workspace.plans[scenario].order, undelivered_batches=len(undelivered), now=now)
    logger.info(summary(report, undelivered_batches=len(undelivered)))
    if undelivered:
        raise TickError(f"{scenario}: emails not delivered yet, they stay pending for the next tick: " + "; ".join(undelivered), report)
    return report


def _deliver_batch(engine: Engine, settings: Settings, batch: BatchResult, *, scenario: str, now: datetime,
                   templates: TemplateLibrary, manager: str | None, policy: SendingPolicy, steps: TickSteps, logger,
                   undelivered: list[str],
                   report: TickReport) -> DeliveryResult:
    """Deliver one batch's emails: what left counts even when the delivery then fails (a retry for the rest, an
    error): the tally is this tick's, every attempt adds to it. A delivery that fails is noted in `undelivered`,
    and its messages are counted where they stand once the tick is done (`pending`, see count_tick)."""
    tally = DeliveryResult()
    if not batch.outbox_ids:  # a batch of waits and branches owes no email
        return tally
    try:
        steps.deliver(engine, settings, outbox_ids=batch.outbox_ids, now=now, templates=templates, manager=manager,
                      policy=policy, tally=tally)
    except Exception as exc:  # noqa: BLE001 - the other batches' emails should still leave; the tick fails at the end
        written = ", ".join(f"{step} {n}" for (step, outcome), n in sorted(batch.counts.items()) if outcome == "sent")
        undelivered.append(f"batch {report.batches + 1} ({len(batch.outbox_ids)} emails"
                           + (f" of step {written}" if written else "") + f"): {exc}")
        report.undelivered_ids.extend(batch.outbox_ids)
    if tally.unknown or tally.failed:
        logger.warning("%s: %d message(s) with an unknown outcome (not resent), %d failed: %s", scenario,
                       tally.unknown, tally.failed, "; ".join(tally.errors[:3]))
    return tally


def _deliver_leftovers(engine: Engine, settings: Settings, report: TickReport, *, now: datetime,
                       templates: TemplateLibrary, manager: str | None, policy: SendingPolicy, steps: TickSteps,
                       logger) -> None:
    """Send what earlier runs left pending and the hand-off and SLA emails written since; say what was cut off."""
    leftovers = steps.deliver_leftovers(engine, settings, now=now, templates=templates, manager=manager, policy=policy)
    report.leftovers, report.cut_off = leftovers.sent, len(leftovers.cut_off)
    report.add_holds(leftovers)
    if leftovers.cut_off:
        logger.warning("%d message(s) were cut off mid-send by a run that died (outbox %s): their outcome is unknown, "
                       "they are not resent; check the transport's logs, then `relance outbox resolve ID ... --as pending|failed`",
                       len(leftovers.cut_off), ", ".join(map(str, leftovers.cut_off[:10])))
    if leftovers.sent or leftovers.failed or leftovers.retryable:
        logger.info("other pending messages (hand-off and SLA emails, what earlier runs left): %d sent, "
                    "%d failed or expired, %d still pending%s",
                    leftovers.sent, leftovers.failed, leftovers.retryable,
                    f" ({'; '.join(leftovers.errors[:3])})" if leftovers.errors else "")


def _register(engine: Engine, settings: Settings, *, now: datetime, workspace: Workspace) -> dict[str, int]:
    """The inline tick's register step, one transaction (the flow's task owns its own the same way)."""
    with Session(engine) as session:
        ids = sync_scenarios(session, workspace=workspace, now=now)
        session.commit()
    return ids


def _enroll(engine: Engine, settings: Settings, *, scenario: str, now: datetime, workspace: Workspace) -> int:
    """The inline tick's enroll step: a transaction per chunk of leads (as the flow's task)."""
    with Session(engine) as session:
        return enroll_due(session, scenario=scenario, workspace=workspace, now=now, batch_size=settings.batch_size,
                          commit=True)


def _count(engine: Engine, report: TickReport, *, now: datetime, mark: int, standing: bool) -> TickReport:
    """The inline tick's count step (as the flow's task)."""
    with Session(engine) as session:
        return count_tick(session, report, now=now, mark=mark, standing=standing)


def run_tick_inline(
    engine: Engine, settings: Settings, *, scenario: str, now: datetime, workspace: Workspace, templates: TemplateLibrary,
    transport: Transport | None = None, batch_size: int | None = None, standing: bool = True,
) -> TickReport:
    """The tick `flows/tick.py` runs, with plain functions instead of Prefect tasks (and no retries): for tests,
    benchmarks and the simulator's checks. `standing=False` skips counting where every enrollment stands (`waiting`
    stays None): the benchmarks measure the work that grows with what is due, not with what is enrolled."""
    transport = transport or make_transport(settings)
    steps = TickSteps(
        register=_register, enroll=_enroll, advance=advance_due,
        deliver=functools.partial(deliver, transport=transport),
        deliver_leftovers=functools.partial(deliver_pending, transport=transport),
        count=functools.partial(_count, standing=standing),
    )
    return run_tick(engine, settings, scenario=scenario, now=now, workspace=workspace, templates=templates,
                    limit=batch_size or settings.batch_size, steps=steps, logger=LOGGER)
