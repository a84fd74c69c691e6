"""Tasks that put leads into a scenario: register its current version, then enroll who matches."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine
from sqlmodel import Session

from relance.enrollment import enroll_due
from relance.plans import sync_scenarios
from relance.settings import Settings
from relance.workspace import Workspace


# NO_CACHE: these write to the database; a cached result would skip the write.
@task(name="register-scenarios", cache_policy=NO_CACHE)
def register_scenarios(engine: Engine, settings: Settings, *, now: datetime, workspace: Workspace) -> dict[str, int]:
    """Store the current version of every scenario in the folder; name -> version id."""
    with Session(engine) as session:
        ids = sync_scenarios(session, workspace=workspace, now=now)
        session.commit()
    return ids


@task(name="enroll", task_run_name="enroll-{scenario}", cache_policy=NO_CACHE)
def enroll(engine: Engine, settings: Settings, *, scenario: str, now: datetime, workspace: Workspace) -> int:
    """Enroll every lead that newly matches the scenario's segment trigger; how many entered."""
    with Session(engine) as session:  # one transaction per chunk of leads, committed as it goes
        return enroll_due(session, scenario=scenario, workspace=workspace, now=now, batch_size=settings.batch_size,
                          commit=True)
