"""The task that publishes what a tick did as a Prefect table artifact, and the words for the log."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

if TYPE_CHECKING:  # only for the annotations: the helpers below are tested without a database
    from relance.runner import TickReport


def artifact_key(scenario: str) -> str:
    """`tick-<scenario>`, reduced to what Prefect accepts in a key: lowercase letters, digits, dashes."""
    return "tick-" + (re.sub(r"[^a-z0-9-]+", "-", scenario.lower()).strip("-") or "scenario")


def _cell(value: object) -> str:
    # The UI renders the table as markdown: a pipe or a newline in a step id would break a row.
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def step_rows(counts: Mapping[tuple[str, str], int], order: Sequence[str] = ()) -> list[dict[str, object]]:
    """One row per (step, outcome) this tick produced, in the scenario's step order."""
    rank = {step: i for i, step in enumerate(order)}
    keys = sorted(counts, key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1]))
    return [{"step": _cell(step), "outcome": _cell(outcome), "count": counts[(step, outcome)]} for step, outcome in keys]


def waiting(report: TickReport) -> int:
    """Enrollments this tick left in a wait (they come back when due or when their event arrives)."""
    return sum(n for (_, outcome), n in report.counts.items() if outcome == "waiting")


def summary(report: TickReport, *, undelivered_batches: int = 0) -> str:
    """What the tick did, in the operator's words."""
    words = (
        f"{report.scenario}: {report.entered} entered, {report.advanced} due, {report.batches} "
        f"{'batch' if report.batches == 1 else 'batches'}, {report.sent} sent, {waiting(report)} waiting"
    )
    if report.skipped:
        words += f", {report.skipped} skipped (suppressed)"
    if report.failed:
        words += f", {report.failed} failed"
    if undelivered_batches:
        words += f", {undelivered_batches} {'batch' if undelivered_batches == 1 else 'batches'} not delivered after every retry (their emails stay pending)"
    return words


@task(name="publish-report", task_run_name="report-{report.scenario}", cache_policy=NO_CACHE)
def publish_report(report: TickReport, *, order: Sequence[str] = (), undelivered_batches: int = 0) -> str:
    """Publish the per-step table of this tick under `tick-<scenario>`; returns the artifact key."""
    key = artifact_key(report.scenario)
    rows = step_rows(report.counts, order) or [{"step": "-", "outcome": "nothing was due", "count": 0}]
    create_table_artifact(table=rows, key=key, description=_cell(summary(report, undelivered_batches=undelivered_batches)))
    return key
