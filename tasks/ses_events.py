"""The task that drains SES event notifications from SQS, retried when the queue cannot be reached."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed
from sqlalchemy import Engine
from sqlmodel import Session

from relance.clock import SystemClock
from relance.prefect_adapter import Announcer
from relance.ses_events import drain
from relance.settings import SettingError, Settings
from relance.workspace import Workspace


@task(name="drain-ses-events", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
def drain_task(engine: Engine, workspace: Workspace, settings: Settings, queue_url: str, dead_letter_url: str | None):
    """Store every event waiting in the queue (bounces and complaints suppress at once); what was done."""
    import boto3

    sqs = boto3.client("sqs", region_name=settings.ses_region, endpoint_url=settings.ses_endpoint_url)
    try:
        with Session(engine) as session:  # drain commits each message before it leaves the queue
            return drain(session, workspace=workspace, sqs=sqs, queue_url=queue_url, clock=SystemClock(), once=True,
                         dead_letter_url=dead_letter_url, machine_click_seconds=settings.machine_click_seconds,
                         announce=Announcer())  # the ticks of the scenarios these events woke run now
    except SettingError as exc:  # the queue is out of reach or refuses: retried, and said, without a traceback
        return Failed(message=str(exc))
