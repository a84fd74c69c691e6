"""The task that sends one batch of outbox rows, retried when the transport says a retry may help."""

from __future__ import annotations

from datetime import datetime

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from sqlalchemy import Engine

from relance.delivery import RetryableDelivery, deliver, deliver_pending
from relance.email.templates import TemplateLibrary
from relance.policy import SendingPolicy
from relance.settings import Settings
from relance.settling import DeliveryResult

RETRY_DELAYS = [2, 10, 30]


def retry_may_help(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry throttling and timeouts only: a bug or a bad template fails the same way every time."""
    return isinstance(state.result(raise_on_failure=False), RetryableDelivery)


# Retrying is safe: `deliver` only sends rows still `pending`, so a row sent by an earlier
# attempt is never sent twice.
@task(
    name="deliver-batch",
    cache_policy=NO_CACHE,
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_may_help,
)
def deliver_batch(engine: Engine, settings: Settings, *, outbox_ids: list[int], now: datetime, templates: TemplateLibrary,
                  manager: str | None, policy: SendingPolicy, tally: DeliveryResult | None = None) -> DeliveryResult:
    """Render and send the given outbox rows through the configured transport; each attempt adds what it did to
    `tally` (the tick's), so what an attempt sent before it failed is counted."""
    return deliver(engine, settings, outbox_ids=outbox_ids, now=now, templates=templates, manager=manager, policy=policy,
                   tally=tally)


# No retries of its own: what it cannot send stays pending for the next tick.
@task(name="deliver-pending", cache_policy=NO_CACHE)
def deliver_leftovers(engine: Engine, settings: Settings, *, now: datetime, templates: TemplateLibrary,
                      manager: str | None, policy: SendingPolicy) -> DeliveryResult:
    """Send what earlier runs left pending (spent retries, a crash) and the hand-off emails written since."""
    return deliver_pending(engine, settings, now=now, templates=templates, manager=manager, policy=policy)
