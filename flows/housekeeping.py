"""Scheduled housekeeping flows: score decay, SLA breaches, re-engagement of "later" leads.

Each flow reads its settings, folders and database before its task runs: one it cannot use ends the run Failed
with the sentence that says so (`relance.flows.refusals`).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from relance.flows.refusals import refuses_bad_setup
from relance.flows.tick import tick_time
from relance.plans import open_store
from relance.settings import read_settings, require_signing_keys
from relance.tasks.artifacts import publish_account
from relance.tasks.housekeeping import decay_task, reengage_task, sla_task
from relance.workspace import load_workspace, load_scoring, scenarios_folder


@flow(name="decay")
@refuses_bad_setup
def decay(now: str | None = None) -> dict:
    """Fade the behaviour score of idle leads (scoring.yaml `decay`)."""
    settings, when = read_settings(), tick_time(now)
    scoring = load_scoring(scenarios_folder(settings))
    engine = open_store(settings)
    try:
        report = decay_task(engine, scoring, when, settings.batch_size)
    finally:
        engine.dispose()
    get_run_logger().info("decay: %s idle lead(s) lost %s point(s) in all", report.leads, -report.points)
    return {"leads": report.leads, "points": report.points}


@flow(name="sla")
@refuses_bad_setup
def sla(now: str | None = None) -> dict:
    """Flag handoffs past their SLA target and deadline; tell owners and the manager about missed deadlines."""
    settings, when = read_settings(), tick_time(now)
    workspace = load_workspace(settings)
    require_signing_keys(settings)  # links it signs (or mail it sends) must not be forgeable
    engine = open_store(settings)
    try:
        report = sla_task(engine, workspace, when)
        overview = publish_account(engine, now=when)  # the breaches it just flagged show in the account's overview
    finally:
        engine.dispose()
    get_run_logger().info("sla: %s open handoff(s), %s newly past target, %s newly past deadline",
                          report.open, report.target_missed, report.deadline_missed)
    get_run_logger().info("%s", overview)
    return {"open": report.open, "target_missed": report.target_missed, "deadline_missed": report.deadline_missed}


@flow(name="reengage")
@refuses_bad_setup
def reengage(now: str | None = None) -> dict:
    """Enroll the leads sales said "later" about, on their date, in the re-engagement scenario."""
    settings, when = read_settings(), tick_time(now)
    workspace = load_workspace(settings)
    require_signing_keys(settings)  # links it signs (or mail it sends) must not be forgeable
    engine = open_store(settings)
    try:
        enrolled = reengage_task(engine, settings, workspace, when)
    finally:
        engine.dispose()
    get_run_logger().info("reengage: %s lead(s) back in nurturing today", enrolled)
    return {"enrolled": enrolled}
