"""`relance report` and `bench`: the funnel and economics on record, and the engine's own throughput."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from relance.cli.common import NOW_HELP, _fail, _workspace, _now, _prefect, _print_json, _stored, console, err


def report(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    scenario: Optional[str] = typer.Option(None, "--scenario", help="Only this scenario's step tables."),
    period: Optional[str] = typer.Option(None, "--period", help="Economics of this period only: 2026, 2026-Q1 or 2026-03."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP + " Hand-offs past their deadline by then count as breaches."),
    days: int = typer.Option(14, "--days", help="Deliverability of the emails sent on this many days, up to --now's day (UTC)."),
) -> None:
    """Funnel, per-step counts, conversion rates, SLA compliance, rejection reasons, CPL / CPA / ROI (per period too),
    bounce, complaint and unsubscribe rates per scenario and sending day."""
    from sqlmodel import Session

    from relance.deals import parse_period
    from relance.report import MAX_DAYS, build_report, scenarios_on_record

    when = _now(now)
    try:
        within = parse_period(period) if period is not None else None
    except ValueError as exc:
        _fail(f"--period {exc}")
    if not 1 <= days <= MAX_DAYS:
        _fail(f"--days {days}: give 1 to {MAX_DAYS} days")
    workspace = _workspace()
    with Session(_stored()) as session:
        if scenario is not None:
            known = set(workspace.plans) | scenarios_on_record(session)
            if scenario not in known:
                _fail(f"--scenario {scenario!r}: no such scenario (known: {', '.join(sorted(known)) or 'none'})")
        figures = build_report(session, now=when, scenario=scenario, orders={n: p.order for n, p in workspace.plans.items()},
                               period=within, days=days)
    if as_json:
        _print_json(figures)
        return
    from relance.report_tables import print_report

    print_report(figures, console, err)


def bench(
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes: under 3 minutes."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (figures, goals, details)."),
) -> None:
    """Throughput, scaling and memory, each ratio measured side by side in this run (see bench/)."""
    from relance.bench.run import FULL, QUICK, run
    from relance.prefect_adapter import flow_api

    with _prefect(), flow_api():  # the naive design's flow runs, on the same local API as a tick's
        figures = run(QUICK if quick else FULL, progress=lambda step: err.print(f"[dim]bench:[/] {step}"))
    if as_json:
        sys.stdout.write(json.dumps(figures, indent=2) + "\n")
        return
    _print_bench(figures)


def _print_bench(figures: dict, out: Console | None = None) -> None:
    out = out or console
    goals = figures["goals"]
    table = Table("figure", "value", "goal", "met", title="relance bench")
    for name, value in figures.items():
        if name in ("goals", "details"):
            continue
        goal = goals.get(name)
        met = "" if goal is None else ("yes" if goal["met"] else "[red]no[/]")
        table.add_row(name, f"{value:,}", goal["goal"] if goal else "", met)
    m = figures["details"]["machine"]
    table.caption = f"{m['cpus']} CPUs, {m['processor']}, {m['system']}, Python {m['python']}"
    out.print(table)
