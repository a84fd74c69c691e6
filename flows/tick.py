"""The tick: one flow run per scenario advances everything that is due, batch by batch.

Thin on purpose: it only sequences the tasks (register, enroll, then advance and deliver
until nothing is due, then send what earlier runs left pending, then count and report; docs/ticks.md
says what each figure counts). The work itself lives in `relance.runner`.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger
from prefect.states import Failed, State

from flows.refusals import refuses_bad_setup
from relance.clock import instant_or_now
from relance.library import BrokenScenario, load_library
from relance.runner import DeliveryResult, TickError, TickReport, open_store, step_log_mark
from relance.settings import Settings, read_settings, require_signing_keys
from tasks.advance import advance_batch
from tasks.deliver import deliver_batch, deliver_leftovers
from tasks.enroll import enroll, register_scenarios
from tasks.report import count_tick, publish_not_run, publish_report, summary


def tick_time(now: str | None) -> datetime:
    """The instant the tick runs at: `now` (ISO 8601, naive = UTC) or the system clock."""
    try:
        return instant_or_now(now)
    except ValueError as exc:
        raise TickError(f"now: {exc}") from None


def not_run(broken: BrokenScenario, settings: Settings, logger) -> State:
    """The tick of a scenario whose file is broken: nothing moves; the artifact and the log say why and what to do,
    and the run ends Failed (no traceback: nothing went wrong in relance) so that a schedule's failed run is seen."""
    engine = open_store(settings)
    try:
        words = publish_not_run(broken, engine)
    finally:
        engine.dispose()
    logger.warning("%s:\n%s", words, "\n".join(str(problem) for problem in broken.problems))
    return Failed(message=words)


@flow(name="tick", flow_run_name="{scenario}")
@refuses_bad_setup
def tick(scenario: str, now: str | None = None, batch_size: int | None = None) -> dict:
    """Advance every due enrollment of one scenario, send what they owe, publish the counts."""
    logger = get_run_logger()
    when = tick_time(now)
    settings = read_settings()  # read per run: a worker serves runs with whatever RELANCE_* it has now
    library = load_library(settings)
    require_signing_keys(settings)  # links it signs (or mail it sends) must not be forgeable
    if scenario in library.waiting:
        return not_run(library.waiting[scenario], settings, logger)
    if scenario not in library.plans:
        known = ", ".join(sorted(library.plans)) or "none"
        raise TickError(f"no scenario named {scenario!r} in {settings.scenarios_dir} (found: {known})")
    for broken in library.broken:  # the others run on; the operator hears of it in every tick's log
        logger.warning("%s", broken.warning())
    limit = batch_size or settings.batch_size
    engine = open_store(settings)
    try:
        mark = step_log_mark(engine)  # what this tick writes to the step log comes after it: its figures count that
        register_scenarios(engine, settings, now=when, library=library)
        report = TickReport(scenario=scenario)
        enroll(engine, settings, scenario=scenario, now=when, library=library)
        undelivered: list[str] = []
        while (batch := advance_batch(engine, settings, scenario=scenario, now=when, limit=limit, library=library)).advanced:
            for problem in batch.failed:
                logger.warning("%s: lead left the scenario on an error: %s", scenario, problem)
            if not batch.outbox_ids:  # a batch of waits and branches owes no email
                report.add(batch, DeliveryResult())
                continue
            delivery = deliver_batch(engine, settings, outbox_ids=batch.outbox_ids, now=when, return_state=True)
            if delivery.is_failed():
                # keep going: the other batches' emails should still leave; the run fails at the end
                error = delivery.result(raise_on_failure=False)
                undelivered.append(f"batch {report.batches + 1} ({len(batch.outbox_ids)} emails): {error}")
                report.add(batch, DeliveryResult())
            else:
                done = delivery.result()
                report.add(batch, done)
                if done.unknown or done.failed:
                    logger.warning("%s: %d message(s) with an unknown outcome (not resent), %d failed: %s", scenario,
                                   done.unknown, done.failed, "; ".join(done.errors[:3]))
        leftovers = deliver_leftovers(engine, settings, now=when)
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
        report = count_tick(engine, report, now=when, mark=mark)
        publish_report(report, engine, order=library.plans[scenario].order, undelivered_batches=len(undelivered))
    finally:
        engine.dispose()
    logger.info(summary(report, undelivered_batches=len(undelivered)))
    if undelivered:
        raise TickError(f"{scenario}: emails not delivered yet, they stay pending for the next tick: " + "; ".join(undelivered))
    return report.as_dict()
