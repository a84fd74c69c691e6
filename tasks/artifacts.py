"""The tasks that count and publish what a tick did and where its leads stand (table `tick-<scenario>`), who is where
in its scenario now with its funnel since it started and the reasons behind each step's outcomes, its deliverability
and what sending.yaml held back (markdown `report-<scenario>`), and the whole account (markdown `account-overview`),
each version titled by its description. Figures: relance.standing; markdown: relance.cockpit; meaning: docs/ticks.md."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from prefect import task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE
from prefect.settings import get_current_settings
from sqlalchemy.engine import Engine
from sqlmodel import Session

from relance.cockpit import (account_markdown, account_title, cell as _cell, deliverability_markdown, tick_title,
                             who_is_where_markdown, who_is_where_title)
from relance.plans import current_version_ids, plan_for_version
from relance.report import deliverability, held_back, standing
from relance.standing import account_overview, who_is_where
from relance.tick_figures import TickReport, count_tick as count_from_store, summary
from relance.workspace import BrokenScenario


def _slug(scenario: str) -> str:
    """What Prefect accepts in a key: lowercase letters, digits, dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", scenario.lower()).strip("-") or "scenario"


def artifact_key(scenario: str) -> str:
    """`tick-<scenario>`: what one tick did."""
    return "tick-" + _slug(scenario)


def figures_key(scenario: str) -> str:
    """`report-<scenario>`: who is where in the scenario now, its funnel since it started and why."""
    return "report-" + _slug(scenario)


def progress_key(scenario: str) -> str:
    """`progress-<scenario>`: how far a long tick has got."""
    return "progress-" + _slug(scenario)


ACCOUNT_KEY = "account-overview"


def figures_link(scenario: str, ui_url: str | None) -> str:
    """A markdown link to the figures artifact: absolute when the UI's address is known, else UI-relative."""
    return f"[{figures_key(scenario)}]({(ui_url or '').rstrip('/')}/artifacts/key/{figures_key(scenario)})"


def step_rows(counts: Mapping[tuple[str, str], int], order: Sequence[str] = (),
              standing: Mapping[str, tuple[int, int]] | None = None) -> list[dict[str, object]]:
    """One row per step of the scenario, in its order (then any step of an older version still in use): how many
    active enrollments are at it now, how many of them wait, and this tick's outcomes there ("sent 5, waiting 3")."""
    standing = standing or {}
    rank = {step: i for i, step in enumerate(order)}
    names = sorted(set(order) | set(standing) | {step for step, _ in counts}, key=lambda step: (rank.get(step, len(rank)), step))
    rows = []
    for step in names:
        here, waiting = standing.get(step, (0, 0))
        outcomes = ", ".join(f"{outcome} {n}" for (at, outcome), n in sorted(counts.items()) if at == step)
        rows.append({"step": _cell(step), "now here": here, "waiting": waiting, "this tick": _cell(outcomes)})
    return rows


class Progress:
    """A long tick (more than one batch due) shows its progress in the UI: a progress artifact, updated per batch."""

    def __init__(self, scenario: str, batch_size: int) -> None:
        self.scenario, self.batch_size, self.artifact = scenario, batch_size, None

    def __call__(self, done: int, due: int) -> None:
        percent = 100.0 * done / due if due else 100.0
        words = f"{self.scenario}: {done} of {due} due enrollments advanced"
        if self.artifact is None:
            if due <= self.batch_size:
                return  # one batch: over before anyone looks
            self.artifact = create_progress_artifact(percent, key=progress_key(self.scenario), description=words)
        else:
            update_progress_artifact(self.artifact, percent, description=words)


@task(name="count-tick", task_run_name="count-{report.scenario}", cache_policy=NO_CACHE)
def count_tick(engine: Engine, report: TickReport, *, now: datetime, mark: int) -> TickReport:
    """Read from the database who started in this tick and where the scenario's leads stand now."""
    with Session(engine) as session:  # read only: the task owns the session
        return count_from_store(session, report, now=now, mark=mark)


def scenario_markdown(session: Session, scenario: str, *, order: Sequence[str], now: datetime) -> tuple[str, str]:
    """`report-<scenario>`'s markdown and title: who is where now and why, its deliverability, what was held back."""
    figures = who_is_where(session, scenario, order=order, now=now)
    markdown = who_is_where_markdown(figures)
    markdown += "\n\n" + deliverability_markdown(scenario, deliverability(session, now=now, scenario=scenario))
    if held := held_back(session, scenario=scenario).get(scenario):
        reasons = ", ".join(f"{kind} {n}" for kind, n in sorted(held["reasons"].items(), key=lambda kv: -kv[1]))
        markdown += (f"\n\n**Held back by sending.yaml:** {held['deferred']} deferred ({held['waiting']} still "
                     f"waiting), {held['skipped']} skipped; why: {_cell(reasons)}")
    return markdown, who_is_where_title(figures)


def publish_account(engine: Engine, *, now: datetime) -> str:
    """Publish the account's overview as of `now` under `account-overview`; returns its title."""
    with Session(engine) as session:
        figures = account_overview(session, now=now)
    title = account_title(figures)
    create_markdown_artifact(markdown=account_markdown(figures), key=ACCOUNT_KEY, description=title)
    return title


@task(name="publish-report", task_run_name="report-{report.scenario}", cache_policy=NO_CACHE)
def publish_report(
    report: TickReport, engine: Engine | None = None, *, order: Sequence[str] = (), undelivered_batches: int = 0,
    now: datetime | None = None,
) -> str:
    """Publish this tick's per-step table under `tick-<scenario>`, and, given the store, who is where in the scenario
    under `report-<scenario>` (linked from the table's description) and the account under `account-overview`, each
    titled with the tick's time; returns the tick's artifact key."""
    now = now or datetime.now(timezone.utc)
    key = artifact_key(report.scenario)
    description = tick_title(report.scenario, now, summary(report, undelivered_batches=undelivered_batches))
    if engine is not None:
        with Session(engine) as session:
            markdown, title = scenario_markdown(session, report.scenario, order=order, now=now)
        create_markdown_artifact(markdown=markdown, key=figures_key(report.scenario), description=title)
        publish_account(engine, now=now)
        description += " · scenario figures: " + figures_link(report.scenario, get_current_settings().ui_url)
    rows = step_rows(report.counts, order, report.standing) or [{"step": "-", "now here": 0, "waiting": 0,
                                                                   "this tick": "nothing was due"}]
    create_table_artifact(table=rows, key=key, description=description)
    return key


NOT_RUN = "not run: the file has problems"


def not_run_summary(broken: BrokenScenario, leads: int) -> str:
    """What the tick of a scenario whose file is broken did (nothing), in the operator's words."""
    return (f"{broken.name}: not run: {broken.path} has {len(broken.problems)} problem(s); its {leads} "
            f"{'lead waits' if leads == 1 else 'leads wait'} where they are until it is fixed "
            f"(relance validate {broken.path})")


@task(name="publish-not-run", task_run_name="report-{broken.name}", cache_policy=NO_CACHE)
def publish_not_run(broken: BrokenScenario, engine: Engine) -> str:
    """The tick of a broken scenario: publish under `tick-<scenario>` where its leads stand (none moved) with the
    file's problems in the description; returns the summary for the log."""
    with Session(engine) as session:
        here = {step: found for (_, step), found in standing(session, broken.name).items()}
        versions = current_version_ids(session)
        order = plan_for_version(session, versions[broken.name]).order if broken.name in versions else ()
    words = not_run_summary(broken, sum(n for n, _ in here.values()))
    rows = [dict(row, **{"this tick": NOT_RUN}) for row in step_rows({}, order, here)] or [
        {"step": "-", "now here": 0, "waiting": 0, "this tick": NOT_RUN}]
    problems = " · ".join(str(problem) for problem in broken.problems)
    create_table_artifact(table=rows, key=artifact_key(str(broken.name)), description=_cell(f"{words} · {problems}"))
    return words
