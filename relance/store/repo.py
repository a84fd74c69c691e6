"""Data functions: keyword-only arguments, the session comes from the caller, batches over rows."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import Row, Table, bindparam, delete, exists, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from relance.scenario.model import ReentryAfter
from relance.scenario.plan import Plan
from relance.store.tables import Enrollment, Event, Lead, Outbox, ScenarioVersion


def insert_ignoring_conflicts(session: Session, table, conflict_columns: Sequence[str], where=None):
    """INSERT .. ON CONFLICT (columns) [WHERE partial-index predicate] DO NOTHING, on either backend."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns), index_where=where)
    if dialect == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns), index_where=where)
    return insert(table)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def find_lead(session: Session, email: str) -> Lead | None:
    """The lead with this email (any case, surrounding spaces ignored), or None."""
    return session.exec(select(Lead).where(Lead.email == normalise_email(email))).scalars().first()


def upsert_lead(session: Session, *, email: str, now: datetime, **profile: Any) -> Lead:
    """The lead with this email, created if new; non-empty profile values update it."""
    email = normalise_email(email)
    lead = find_lead(session, email)
    if lead is None:  # two workers receiving the same form at once create one lead
        session.execute(insert_ignoring_conflicts(session, Lead.__table__, ["email"]),
                        [Lead(email=email, created_at=now, updated_at=now).model_dump(exclude={"id"})])
        lead = find_lead(session, email)
    for key, value in profile.items():
        if value not in (None, "") and hasattr(lead, key):
            setattr(lead, key, value)
    lead.updated_at = now
    session.flush()
    return lead


def ensure_scenario_version(session: Session, *, plan: Plan, source_path: str, now: datetime) -> ScenarioVersion:
    """The stored version of this plan (by content hash), created the first time it is seen."""
    version = session.exec(
        select(ScenarioVersion).where(ScenarioVersion.scenario == plan.name, ScenarioVersion.hash == plan.hash)
    ).scalars().first()
    if version is None:
        version = ScenarioVersion(
            scenario=plan.name, hash=plan.hash, definition=plan.definition(), source_path=source_path, created_at=now
        )
        session.add(version)
        session.flush()
    return version


def claim_due_enrollments(
    session: Session, *, scenario: str, now: datetime, limit: int, ids: Sequence[int] | None = None,
) -> list[Row]:
    """Due active enrollments (of `ids`, if given), oldest first, as plain rows (the tick writes them back in bulk).

    The claim is a write, held until the caller commits: on PostgreSQL the rows are locked
    `FOR UPDATE SKIP LOCKED` (other workers take other rows); on SQLite the statement takes the
    database's write lock, so a second worker waits and then finds them advanced."""
    table = Enrollment.__table__
    due = (
        select(table.c.id)
        .where(table.c.scenario == scenario, table.c.status == "active", table.c.due_at <= now)
        .order_by(table.c.due_at, table.c.id)
        .limit(limit)
    )
    if ids is not None:
        due = due.where(table.c.id.in_(list(ids)))
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    claimed = session.execute(
        update(table).where(table.c.id.in_(due.scalar_subquery())).values(due_at=table.c.due_at).returning(*table.c)
    ).all()
    return sorted(claimed, key=lambda row: (row.due_at, row.id))


def insert_enrollments(session: Session, rows: list[dict[str, Any]], *, reentry, now: datetime) -> list[tuple[int, int]]:
    """Insert enrollments as the scenario's `reentry` allows, exactly, whatever runs at the same time;
    returns (enrollment id, lead id) of those that entered.

    A second *active* enrollment of a lead is impossible (unique index `uq_enrollment_active`: the
    insert skips it). For `never` and `{after: D}` the inserted rows are checked once more in the
    same transaction against every enrollment committed meanwhile, and withdrawn if one blocks them:
    a worker that enrolled, advanced and completed the lead between our read and our insert."""
    table = Enrollment.__table__
    statement = insert_ignoring_conflicts(session, table, ["lead_id", "scenario"], where=text("status = 'active'"))
    entered = [tuple(row) for row in session.execute(statement.returning(table.c.id, table.c.lead_id), rows).all()]
    if not entered or reentry == "always":
        return entered
    other = table.alias("other")
    blocking = [other.c.lead_id == table.c.lead_id, other.c.scenario == table.c.scenario, other.c.id != table.c.id]
    if isinstance(reentry, ReentryAfter):
        blocking.append(other.c.entered_at > now - reentry.after)
    withdrawn: set[int] = set()
    ids = [enrollment_id for enrollment_id, _ in entered]
    for start in range(0, len(ids), _IN_CHUNK):
        withdrawn.update(session.execute(
            delete(table).where(table.c.id.in_(ids[start:start + _IN_CHUNK]), exists().where(*blocking))
            .returning(table.c.id)
        ).scalars())
    return [pair for pair in entered if pair[0] not in withdrawn]


def record_events(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Store events once per idempotency key, in one statement (safe under races);
    returns the ids of the new ones by key. Keys already stored are left out."""
    if not rows:
        return {}
    statement = insert_ignoring_conflicts(session, Event, ["idempotency_key"]).returning(Event.id, Event.idempotency_key)
    return {key: event_id for event_id, key in session.execute(statement, rows).all()}


def insert_outbox_rows(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert outbox rows, ignoring those already there for (enrollment, step, visit); returns the new rows' ids."""
    if not rows:
        return []
    statement = insert_ignoring_conflicts(session, Outbox.__table__, ["enrollment_id", "step_id", "visit"])
    return list(session.execute(statement.returning(Outbox.__table__.c.id), rows).scalars().all())


def insert_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Plain bulk insert through the Core table (multi-row VALUES), without the ORM's per-row bookkeeping."""
    if rows:
        session.execute(insert(table), rows)


_VALUES_KEY = json.JSONEncoder(sort_keys=True, default=repr)  # rows with equal keys get equal values
_IN_CHUNK = 500  # ids per `IN (...)`: well under every backend's limit on bound parameters


def write_back(session: Session, table: Table, rows: list[dict[str, Any]], *, shared: bool = True) -> None:
    """Update rows by `id`. With `shared`, rows given the same values (a tick moving a thousand leads
    to the same wait) share one `UPDATE .. WHERE id IN (..)`; the others go in one executemany per set of columns."""
    alone: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    if shared:
        groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
        for row in rows:
            values = {name: value for name, value in row.items() if name != "id"}
            groups.setdefault(_VALUES_KEY.encode(values), (values, []))[1].append(row["id"])
        for values, ids in groups.values():
            if len(ids) == 1:
                alone[tuple(sorted(values))].append({"_id": ids[0], **values})
                continue
            for start in range(0, len(ids), _IN_CHUNK):
                session.execute(update(table).where(table.c.id.in_(ids[start:start + _IN_CHUNK])).values(**values))
    else:
        for row in rows:
            values = {name: value for name, value in row.items() if name != "id"}
            alone[tuple(sorted(values))].append({"_id": row["id"], **values})
    for columns, batch in alone.items():
        statement = update(table).where(table.c.id == bindparam("_id")).values({name: bindparam(name) for name in columns})
        session.execute(statement, batch)
