"""Scheduled housekeeping flows: score decay, SLA breaches, re-engagement of "later" leads."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.tick import tick_time
from relance.housekeeping import run_reengage, run_sla
from relance.library import load_library, load_scoring, scenarios_folder
from relance.runner import sync_scenarios
from relance.runner import open_store
from relance.scoring.decay import decay_scores
from relance.settings import Settings


@task(name="decay-scores", cache_policy=NO_CACHE)
def decay_task(settings: Settings, now_iso: str | None):
    return decay_scores(open_store(settings), load_scoring(scenarios_folder(settings)), now=tick_time(now_iso),
                        batch_size=settings.batch_size)


@flow(name="decay")
def decay(now: str | None = None) -> dict:
    """Fade the behaviour score of idle leads (scoring.yaml `decay`)."""
    report = decay_task(Settings(), now)
    get_run_logger().info("decay: %s idle lead(s) lost %s point(s) in all", report.leads, -report.points)
    return {"leads": report.leads, "points": report.points}


@task(name="flag-sla", cache_policy=NO_CACHE)
def sla_task(settings: Settings, now_iso: str | None):
    return run_sla(open_store(settings), load_library(settings), now=tick_time(now_iso))


@flow(name="sla")
def sla(now: str | None = None) -> dict:
    """Flag handoffs past their SLA target and deadline; tell owners and the manager about missed deadlines."""
    report = sla_task(Settings(), now)
    get_run_logger().info("sla: %s open handoff(s), %s newly past target, %s newly past deadline",
                          report.open, report.target_missed, report.deadline_missed)
    return {"open": report.open, "target_missed": report.target_missed, "deadline_missed": report.deadline_missed}


@task(name="reengage-later-leads", cache_policy=NO_CACHE)
def reengage_task(settings: Settings, now_iso: str | None) -> int:
    engine, library, when = open_store(settings), load_library(settings), tick_time(now_iso)
    sync_scenarios(engine, settings, now=when, library=library)
    return run_reengage(engine, library, now=when)


@flow(name="reengage")
def reengage(now: str | None = None) -> dict:
    """Enroll the leads sales said "later" about, on their date, in the re-engagement scenario."""
    enrolled = reengage_task(Settings(), now)
    get_run_logger().info("reengage: %s lead(s) back in nurturing today", enrolled)
    return {"enrolled": enrolled}
