"""A smoke run of the benchmark code at tiny sizes: every figure is produced and every count checked.
The figures themselves mean nothing at this size; `relance bench` is the real run."""

from __future__ import annotations

from pathlib import Path

from relance.bench.run import GOALS, SMOKE, run

KEYS = {
    "floor_emails_per_s", "engine_emails_per_s_sqlite", "engine_emails_per_s_postgres", "floor_ratio",
    "naive_prefect_leads_per_s", "vs_naive", "tick_scaling", "memory_scaling", "ses_pacing", "events_per_s",
    "hot_lead_events_per_s",
    "import_rows_per_s",
}


def test_a_smoke_run_measures_every_figure_with_its_counts_checked(prefect_home: Path) -> None:
    steps: list[str] = []

    figures = run(SMOKE, progress=steps.append)

    assert KEYS <= set(figures) and set(GOALS) <= KEYS
    assert all(figures[k] > 0 for k in KEYS)
    assert set(figures["goals"]) == set(GOALS) and all(isinstance(g["met"], bool) for g in figures["goals"].values())
    details = figures["details"]
    assert details["engine_sqlite"]["emails"] == details["engine_postgresql"]["emails"] == SMOKE.engine
    assert details["naive"]["leads"] == SMOKE.naive
    assert details["tick"]["large"]["enrolled"] == SMOKE.tick_large and details["tick"]["small"]["due"] == SMOKE.tick_due
    assert details["memory"]["large"]["enrollments"] == SMOKE.memory_large
    assert details["ses"]["throttled"]["sent_once"] == SMOKE.ses_emails
    assert details["events"]["events"] == SMOKE.events
    assert details["hot_lead"]["events"] == SMOKE.hot_events
    assert details["imports"]["rows"] == SMOKE.imports and details["imports"]["postgresql"]["new"]["created"] == SMOKE.imports
    assert figures["floor_ratio"] == round(figures["engine_emails_per_s_sqlite"] / figures["floor_emails_per_s"], 3)
    assert len(steps) == 9 and steps[0].startswith("rendering floor")
