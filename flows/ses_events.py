"""Drain SES event notifications from SQS (thin: one task does the batch work)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from relance.clock import SystemClock
from relance.library import load_library
from relance.runner import open_store
from relance.ses_events import drain
from relance.settings import Settings


@task(name="drain-ses-events", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
def drain_task(settings: Settings, queue_url: str, dead_letter_url: str | None):
    import boto3

    sqs = boto3.client("sqs", region_name=settings.ses_region, endpoint_url=settings.ses_endpoint_url)
    return drain(open_store(settings), load_library(settings), sqs, queue_url, clock=SystemClock(), once=True,
                 dead_letter_url=dead_letter_url)


@flow(name="ses-events")
def ses_events(queue_url: str, dead_letter_url: str | None = None) -> dict:
    """Store every SES event waiting in the queue; bounces and complaints suppress at once."""
    report = drain_task(Settings(), queue_url, dead_letter_url)
    get_run_logger().info(
        "ses-events: %s stored, %s already stored, %s address(es) suppressed, %s set aside",
        report.stored, report.duplicates, report.suppressed, report.set_aside,
    )
    return {"stored": report.stored, "duplicates": report.duplicates, "suppressed": report.suppressed, "set_aside": report.set_aside}
