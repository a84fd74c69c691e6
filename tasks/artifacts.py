"""The tasks that count and publish what a tick did and where its leads stand (table `tick-<scenario>`), and
its scenario's figures since it started (markdown `report-<scenario>`, the figures of `relance report --scenario`,
its deliverability over the last days among them), and the words for the log. What each figure means: docs/ticks.md."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.settings import get_current_settings
from sqlalchemy.engine import Engine
from sqlmodel import Session

from relance.plans import current_version_ids, plan_for_version
from relance.report import deliverability, held_back, outcome_words, standing, steps
from relance.tick_figures import TickReport, count_tick as count_from_store, summary
from relance.workspace import BrokenScenario


def _slug(scenario: str) -> str:
    """What Prefect accepts in a key: lowercase letters, digits, dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", scenario.lower()).strip("-") or "scenario"


def artifact_key(scenario: str) -> str:
    """`tick-<scenario>`: what one tick did."""
    return "tick-" + _slug(scenario)


def figures_key(scenario: str) -> str:
    """`report-<scenario>`: the scenario's figures since it started, as `relance report --scenario` shows them."""
    return "report-" + _slug(scenario)


def figures_link(scenario: str, ui_url: str | None) -> str:
    """A markdown link to the figures artifact: absolute when the UI's address is known, else UI-relative."""
    return f"[{figures_key(scenario)}]({(ui_url or '').rstrip('/')}/artifacts/key/{figures_key(scenario)})"


def _cell(value: object) -> str:
    # The UI renders the table as markdown: a pipe or a newline in a step id would break a row.
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


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


def figures_markdown(scenario: str, rows: Sequence[Mapping[str, object]]) -> str:
    """The per-step figures of one scenario as a markdown table (the UI renders it)."""
    head = ["step", "reached", "entered", "now here", "waiting", "sent", "opened", "clicked", "left", "step log (every pass)"]
    lines = [f"# {_cell(scenario)}: every step since the scenario started", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        outcomes = outcome_words(r["outcomes"])  # type: ignore[arg-type]
        cells = [r["step"], r["reached"], r["entered"], r["now"], r["waiting"], r["sent"], r["opened"], r["clicked"],
                 r["left"], outcomes]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if not rows:
        lines.append("| - | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | no lead has entered yet |")
    lines += ["", f"Same figures as `relance report --scenario {scenario}`. Waiting: in a wait now; sent: emails that left; "
              "opened and clicked count distinct leads; the step log counts every pass (written: emails queued)."]
    return "\n".join(lines)


def deliverability_markdown(scenario: str, d: Mapping[str, object]) -> str:
    """The scenario's deliverability as `relance report` shows it (`relance.report.deliverability`): a row per
    sending day, the window's total, and its warnings."""
    window = f"{d['first_day']} to {d['last_day']}"
    figures = d["scenarios"].get(scenario)  # type: ignore[attr-defined]
    lines = [f"## Deliverability, {window}", ""]
    if not figures:
        return "\n".join(lines + ["No email to a lead left on these days."])
    head = ["day", "sent", "hard bounces", "soft bounces", "complaints", "unsubscribes", "hard %", "complaints %",
            "unsubscribes %"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pct(value: object) -> str:
        return "-" if value is None else f"{float(value) * 100:.2f} %"  # type: ignore[arg-type]

    for row in [*figures["by_day"], dict(figures["total"], day=f"last {d['days']} days")]:
        cells = [row["day"] + ("*" if row["small_sample"] else ""), row["sent"], row["hard_bounces"], row["soft_bounces"],
                 row["complaints"], row["unsubscribes"], pct(row["hard_bounce_rate"]), pct(row["complaint_rate"]),
                 pct(row["unsubscribe_rate"])]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", f"By the day the email left (UTC); * under {d['min_sent']} emails: too few to judge alone."]
    lines += [f"- **{_cell(w['level'])}**: {_cell(w['message'])}" for w in d["warnings"]]  # type: ignore[attr-defined]
    return "\n".join(lines)


@task(name="count-tick", task_run_name="count-{report.scenario}", cache_policy=NO_CACHE)
def count_tick(engine: Engine, report: TickReport, *, now: datetime, mark: int) -> TickReport:
    """Read from the database who started in this tick and where the scenario's leads stand now."""
    with Session(engine) as session:  # read only: the task owns the session
        return count_from_store(session, report, now=now, mark=mark)


@task(name="publish-report", task_run_name="report-{report.scenario}", cache_policy=NO_CACHE)
def publish_report(
    report: TickReport, engine: Engine | None = None, *, order: Sequence[str] = (), undelivered_batches: int = 0,
    now: datetime | None = None,
) -> str:
    """Publish this tick's per-step table under `tick-<scenario>`, and, given the store, the scenario's figures
    so far under `report-<scenario>` (with its deliverability up to `now`'s day, given `now`), linked from the table's
    description; returns the tick's artifact key."""
    key = artifact_key(report.scenario)
    description = _cell(summary(report, undelivered_batches=undelivered_batches))
    if engine is not None:
        with Session(engine) as session:
            rows = steps(session, report.scenario, {report.scenario: tuple(order)}).get(report.scenario, [])
            markdown = figures_markdown(report.scenario, rows)
            if now is not None:
                markdown += "\n\n" + deliverability_markdown(report.scenario, deliverability(session, now=now,
                                                                                              scenario=report.scenario))
            if held := held_back(session, scenario=report.scenario).get(report.scenario):
                reasons = ", ".join(f"{kind} {n}" for kind, n in sorted(held["reasons"].items(), key=lambda kv: -kv[1]))
                markdown += (f"\n\n**Held back by sending.yaml:** {held['deferred']} deferred ({held['waiting']} still "
                             f"waiting), {held['skipped']} skipped; why: {reasons}")
        create_markdown_artifact(markdown=markdown, key=figures_key(report.scenario),
                                 description=f"{report.scenario}: every step since the scenario started")
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
