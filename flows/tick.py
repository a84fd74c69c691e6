"""The tick: one flow run per scenario advances everything that is due, batch by batch.

Thin on purpose: `relance.tick.run_tick` sequences the tick (register, enroll, then advance and deliver
until nothing is due, then send what earlier runs left pending, then count and report; docs/ticks.md
says what each figure counts); this flow hands it the tasks of `tasks/`, the delivery with its retries.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from relance.clock import instant_or_now
from relance.email.templates import TemplateLibrary
from relance.flows.refusals import refuses_bad_setup
from relance.plans import open_store
from relance.settings import Settings, read_settings, require_signing_keys
from relance.tasks.advance import advance_batch
from relance.tasks.artifacts import Progress, count_tick, publish_not_run, publish_report
from relance.tasks.deliver import deliver_batch, deliver_leftovers
from relance.tasks.enroll import enroll, register_scenarios
from relance.tick import TickError, TickSteps, run_tick
from relance.tick_figures import headline
from relance.workspace import BrokenScenario, load_workspace

TASKS = TickSteps(register=register_scenarios, enroll=enroll, advance=advance_batch, deliver=deliver_batch,
                  deliver_leftovers=deliver_leftovers, count=count_tick, publish=publish_report)


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
    workspace = load_workspace(settings)
    require_signing_keys(settings)  # links it signs (or mail it sends) must not be forgeable
    if scenario in workspace.waiting:
        return not_run(workspace.waiting[scenario], settings, logger)
    if scenario not in workspace.plans:
        known = ", ".join(sorted(workspace.plans)) or "none"
        raise TickError(f"no scenario named {scenario!r} in {settings.scenarios_dir} (found: {known})")
    for broken in workspace.broken:  # the others run on; the operator hears of it in every tick's log
        logger.warning("%s", broken.warning())
    engine = open_store(settings)
    limit = batch_size or settings.batch_size
    try:
        report = run_tick(engine, settings, scenario=scenario, now=when, workspace=workspace,
                          templates=TemplateLibrary(settings.templates_dir), limit=limit,
                          steps=replace(TASKS, progress=Progress(scenario, limit)), logger=logger)
    except TickError as exc:  # the run fails, its state message naming the batches and steps left undelivered
        logger.error("%s", exc)
        return Failed(message=str(exc), data=exc)  # calling the flow raises it, as before
    finally:
        engine.dispose()
    return Completed(message=headline(report), data=report.as_dict())  # the runs list shows what it did
