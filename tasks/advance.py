"""The task that moves one batch of due enrollments forward."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine

from relance.advancing import BatchResult, advance_due
from relance.settings import Settings
from relance.workspace import Workspace


# No retries: a batch is claimed and advanced in one transaction, so a failure rolls it back
# and the next tick claims the same enrollments again.
@task(name="advance-batch", task_run_name="advance-{scenario}", cache_policy=NO_CACHE)
def advance_batch(
    engine: Engine, settings: Settings, *, scenario: str, now: datetime, limit: int, workspace: Workspace
) -> BatchResult:
    """Claim up to `limit` due enrollments and advance them; the emails they owe go to the outbox."""
    return advance_due(engine, settings, scenario=scenario, now=now, limit=limit, workspace=workspace)
