"""The store a tick works on and the scenario versions it holds: opening it, registering versions, the plan cache.

An enrollment is pinned to the version it entered; a version never changes once stored, so its plan is
built once per database and kept.
"""

from __future__ import annotations

from datetime import datetime
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from relance.scenario.plan import Plan, plan_from_definition
from relance.settings import SettingError, Settings
from relance.store.db import StoreUnavailable, make_engine, migrate
from relance.store.repo import ensure_scenario_version
from relance.store.tables import ScenarioVersion
from relance.workspace import Workspace


def open_store(settings: Settings) -> Engine:
    """The migrated database engine for `RELANCE_DATABASE_URL`; SettingError naming it when it cannot be used."""
    try:
        engine = make_engine(settings.database_url)
        try:
            migrate(engine)
        except StoreUnavailable:
            engine.dispose()
            raise
    except StoreUnavailable as exc:
        raise SettingError(f"setting RELANCE_DATABASE_URL: {exc}") from None
    return engine


_PLANS: WeakKeyDictionary[Engine, dict[int, Plan]] = WeakKeyDictionary()  # per engine: versions never change


def plan_for_version(session: Session, version_id: int) -> Plan:
    """The plan an enrollment is pinned to (cached per database: versions never change)."""
    plans = _PLANS.setdefault(session.get_bind(), {})
    plan = plans.get(version_id)
    if plan is None:
        version = session.get(ScenarioVersion, version_id)
        if version is None:
            raise LookupError(f"scenario version {version_id} is missing from the database")
        plan = plan_from_definition(version.definition)
        if plan.hash != version.hash:
            raise RuntimeError(
                f"scenario {version.scenario} version {version_id}: stored hash {version.hash} "
                f"does not match its definition ({plan.hash}); the row was edited by hand"
            )
        plans[version_id] = plan
    return plan


def sync_scenarios(session: Session, *, workspace: Workspace, now: datetime) -> dict[str, int]:
    """Register the current version of every scenario in the folder, in the caller's transaction (it commits);
    name -> version id."""
    return {
        name: ensure_scenario_version(session, plan=plan, source_path=str(workspace.paths[name]), now=now).id
        for name, plan in workspace.plans.items()
    }


def current_version_ids(session: Session) -> dict[str, int]:
    """The newest registered version of each scenario."""
    rows = session.exec(
        select(ScenarioVersion.scenario, func.max(ScenarioVersion.id)).group_by(ScenarioVersion.scenario)
    ).all()
    return {name: version_id for name, version_id in rows}
