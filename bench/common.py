"""What every benchmark shares: a database of each backend, bulk seeding, a stopwatch."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine, func, insert, select
from sqlmodel import Session

from relance.email.templates import TemplateLibrary
from relance.engine.interpreter import enter
from relance.enrollment import lead_facts
from relance.plans import current_version_ids, open_store, plan_for_version, sync_scenarios
from relance.settings import Settings
from relance.store.db import scratch_postgres
from relance.store.tables import Enrollment, Lead, Outbox
from relance.workspace import Workspace, load_workspace

PROJECT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("RELANCE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday morning, inside every send window
SCENARIO = "whitepaper-nurture"  # first step: send `whitepaper-followup`, then a wait
CHUNK = 20_000


def settings_for(url: str, work: Path) -> Settings:
    return Settings(
        database_url=url, transport="null", outbox_dir=work / "outbox", scenarios_dir=PROJECT / "scenarios",
        templates_dir=PROJECT / "templates" / "emails", secret_key="bench", public_url="https://t.relance.example",
    )


@contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="relance-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def database(backend: str, work: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file in `work`, or a PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{work / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    with scratch_postgres(PG_ADMIN_URL, "relance_bench") as url:
        yield url


@dataclass
class World:
    """A migrated store with the shipped scenarios registered."""

    settings: Settings
    engine: Engine
    workspace: Workspace
    templates: TemplateLibrary


def open_world(url: str, work: Path) -> World:
    settings = settings_for(url, work)
    engine = open_store(settings)
    workspace = load_workspace(settings)
    with Session(engine) as session:
        sync_scenarios(session, workspace=workspace, now=NOW)
        session.commit()
    return World(settings, engine, workspace, TemplateLibrary(settings.templates_dir))


def seed(world: World, *, due: dict[datetime, int], waiting: int = 0, start: int = 0) -> int:
    """Leads enrolled in SCENARIO at its first step: `due[t]` of them due at t, `waiting` due in 60 days.

    Bulk inserts (setup, not measured); every enrollment gets the state the interpreter gives a new one."""
    with Session(world.engine) as session:
        version_id = current_version_ids(session)[SCENARIO]
        plan = plan_for_version(session, version_id)
    slots = [t for t, n in due.items() for _ in range(n)] + [NOW + timedelta(days=60)] * waiting
    lead_table, enrollment_table = Lead.__table__, Enrollment.__table__
    sample = Lead(email="x@bench.example", first_name="Léa", company="ACME", country="FR", created_at=NOW, updated_at=NOW)
    state = enter(plan, lead_facts(sample, world.workspace.scoring), NOW)
    for offset in range(0, len(slots), CHUNK):
        part = slots[offset:offset + CHUNK]
        first = start + offset
        leads = [dict(email=f"lead{first + i}@bench.example", first_name=f"Léa{first + i}", last_name="Martin",
                      job_title="Directrice marketing", company="ACME", sector="saas", country="FR",
                      timezone="Europe/Paris", language="fr", source="bench", stage="lead", score=0, fit=0, grade="D",
                      fields={"basis": {"basis": "legitimate_interest", "source": "bench"}}, tags=[], created_at=NOW, updated_at=NOW) for i in range(len(part))]
        with world.engine.begin() as connection:
            ids = connection.execute(insert(lead_table).returning(lead_table.c.id, sort_by_parameter_order=True), leads).scalars().all()
            connection.execute(insert(enrollment_table), [
                dict(lead_id=lead_id, scenario=SCENARIO, version_id=version_id, status="active", step_id=state.step_id,
                     due_at=at, waiting=None, state=dict(state.memory), entered_at=NOW, step_entered_at=NOW)
                for lead_id, at in zip(ids, part)
            ])
    return len(slots)


def ingest(world: World, events, *, now: datetime):
    """One batch of events, one transaction (the bench owns it, as the API request or the CLI command does)."""
    from relance.ingest import ingest_events

    with Session(world.engine) as session:
        result = ingest_events(session, workspace=world.workspace, events=events, now=now)
        session.commit()
    return result


def count(world: World, statement) -> int:
    with Session(world.engine) as session:
        return session.exec(statement).one()[0]


def sent_rows(world: World) -> int:
    return count(world, select(func.count()).select_from(Outbox).where(Outbox.status == "sent"))


class Stopwatch:
    """`with Stopwatch() as w: ...` then `w.seconds`."""

    def __enter__(self) -> "Stopwatch":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")
