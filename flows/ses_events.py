"""Drain SES event notifications from SQS (thin: one task does the batch work).

Settings, folders and the database are read before the task runs; a queue that cannot be reached or used is
tried again (twice), then the run ends Failed with the sentence naming what to check, without a traceback.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import Failed

from relance.flows.refusals import refuses_bad_setup
from relance.plans import open_store
from relance.settings import SettingError, read_settings
from relance.tasks.ses_events import drain_task
from relance.workspace import load_workspace


@flow(name="ses-events")
@refuses_bad_setup
def ses_events(queue_url: str | None = None, dead_letter_url: str | None = None) -> dict:
    """Store every SES event waiting in the queue (default: the worker's RELANCE_SES_QUEUE_URL); bounces and complaints
    suppress at once."""
    settings = read_settings()
    queue_url = queue_url or settings.ses_queue_url
    dead_letter_url = dead_letter_url or settings.ses_dead_letter_url
    if not queue_url:
        raise SettingError("ses-events: no queue to drain: set RELANCE_SES_QUEUE_URL in the worker's environment (the "
                           "queue URL from infra/ses-events.cfn.yaml's outputs), or run it with queue_url")
    workspace = load_workspace(settings)
    engine = open_store(settings)
    try:
        drained = drain_task(engine, workspace, settings, queue_url, dead_letter_url, return_state=True)
    finally:
        engine.dispose()
    if drained.is_failed():  # the task has said why in its log
        return Failed(message=drained.message)
    report = drained.result()
    get_run_logger().info(
        "ses-events: %s stored, %s already stored, %s address(es) suppressed, %s set aside",
        report.stored, report.duplicates, report.suppressed, report.set_aside,
    )
    return {"stored": report.stored, "duplicates": report.duplicates, "suppressed": report.suppressed, "set_aside": report.set_aside}
