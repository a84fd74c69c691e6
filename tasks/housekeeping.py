"""The housekeeping tasks: fade idle scores, flag hand-offs past their SLA, re-engage the leads sales said "later" about."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine
from sqlmodel import Session

from relance.decay import decay_scores
from relance.housekeeping import run_reengage, run_sla
from relance.plans import sync_scenarios
from relance.scoring.config import ScoringConfig
from relance.settings import Settings
from relance.workspace import Workspace


# NO_CACHE: these write to the database; a cached result would skip the write.
@task(name="decay-scores", cache_policy=NO_CACHE)
def decay_task(engine: Engine, scoring: ScoringConfig, when: datetime, batch_size: int):
    """Take the decay points off every lead idle long enough (scoring.yaml `decay`)."""
    with Session(engine) as session:  # one transaction per chunk of leads, committed as it goes
        return decay_scores(session, scoring=scoring, now=when, batch_size=batch_size, commit=True)


@task(name="flag-sla", cache_policy=NO_CACHE)
def sla_task(engine: Engine, workspace: Workspace, when: datetime):
    """Flag the open hand-offs past their target or deadline; tell whom scoring.yaml names."""
    with Session(engine) as session:
        report = run_sla(session, workspace=workspace, now=when)
        session.commit()
    return report


@task(name="reengage-later-leads", cache_policy=NO_CACHE)
def reengage_task(engine: Engine, settings: Settings, workspace: Workspace, when: datetime) -> int:
    """Register the scenarios, then enroll the "later" leads whose date has come; how many."""
    with Session(engine) as session:
        sync_scenarios(session, workspace=workspace, now=when)
        session.commit()
        enrolled = run_reengage(session, workspace=workspace, now=when)
        session.commit()
    return enrolled
