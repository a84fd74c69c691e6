"""Waking waiting enrollments: the arrival of an awaited event, and any change of a lead that makes a wait hold.

`wake_for_lead_changes` answers "which waiting enrollments of these leads may now go on?" for the lead's
state (score, grade, temperature, stage, tag, field). Everything that changes a lead calls it before its
commit: ingestion (points, MQL, hand-off), sales answers, deals, decay, a tick's score/set/hand-off steps,
grading after a CSV import. A woken enrollment is due now; the next tick advances it and the interpreter decides
(`state_wait_holds`, which the simulator asks too). No `score_changed`/`stage_changed` event exists: this is
how a change of the lead reaches a waiting enrollment (docs/architecture.md).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Iterable, Sequence

from sqlalchemy import select
from sqlmodel import Session

from relance.engine.interpreter import state_wait_holds
from relance.enrollment import events_of, lead_facts, state_of
from relance.plans import plan_for_version
from relance.scoring.config import ScoringConfig
from relance.store.tables import Enrollment, Lead


def lock_active_enrollments(session: Session, lead_ids: Iterable[int], *, sleeping_at: datetime | None = None,
                            skip_locked: bool = False) -> dict[int, list[Enrollment]]:
    """The active enrollments of these leads (with `sleeping_at`: only those not due by then), by lead,
    locked until the caller commits.

    This is what makes a wake-up never lost to a tick running at the same time: on PostgreSQL a
    tick holds its batch `FOR UPDATE` from claim to commit, so this read waits for that commit and
    then sees where the tick left each enrollment (waiting or not); on SQLite it runs after the
    batch's first write, under the database's write lock, so no tick can commit in between.
    Whoever changes a lead takes these locks before changing it (ingestion, sales answers, decay):
    taken in the other order, a tick waiting for the lead would wait for them and they for the tick.
    `skip_locked` is for a transaction that holds locks this order forbids (a tick holds its batch and
    has changed its leads, an import has changed its leads): it never waits for another's."""
    found: dict[int, list[Enrollment]] = defaultdict(list)
    ids = set(lead_ids)
    if ids:
        query = select(Enrollment).where(Enrollment.lead_id.in_(ids), Enrollment.status == "active")
        if sleeping_at is not None:
            query = query.where(Enrollment.due_at > sleeping_at)
        query = query.order_by(Enrollment.id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(of=Enrollment, skip_locked=skip_locked)
        for enrollment in session.exec(query).scalars():
            found[enrollment.lead_id].append(enrollment)
    return found


def wake(enrollments: Sequence[Enrollment], *, event_type: str, now: datetime) -> int:
    """Make due now those of these enrollments whose `wait_until` may be satisfied by this event type."""
    woken = 0
    for enrollment in enrollments:
        waiting = enrollment.waiting or {}
        if waiting.get("kind") == "wait_until" and event_type in waiting.get("event_types", ()):
            if enrollment.due_at is None or enrollment.due_at > now:
                enrollment.due_at = now
                woken += 1
    return woken


def wake_for_lead_changes(session: Session, lead_ids: Iterable[int], *, scoring: ScoringConfig, now: datetime,
                          skip_locked: bool = False) -> int:
    """Make due now the waits of these leads on their state that now hold; returns how many were woken.

    Call it in the transaction that changed the leads, before its commit. Only a `wait_until` whose condition
    reads the lead's state and holds on the lead as stored now is woken (never one for nothing). Its enrollment
    is read `FOR UPDATE` on PostgreSQL, so a wake never lands on an enrollment a tick has just moved on (no
    double advance). A tick or an import passes `skip_locked`: an enrollment another transaction holds is that
    one's to wake (it locked the lead's enrollments before changing the lead, so it waited for this transaction's
    commit, and reads the lead again here before deciding)."""
    session.flush()  # the changes of this transaction are what the conditions must see
    sleeping = [
        enrollment
        for enrollments in lock_active_enrollments(session, lead_ids, sleeping_at=now, skip_locked=skip_locked).values()
        for enrollment in enrollments
        if (enrollment.waiting or {}).get("kind") == "wait_until" and (enrollment.waiting or {}).get("state", True)
    ]  # a row written before `state` was recorded has no such key: the plan decides (state_wait_holds)
    if not sleeping:
        return 0
    # read again: what other transactions committed since this one loaded them counts too
    leads = {lead.id: lead for lead in session.exec(
        select(Lead).where(Lead.id.in_({e.lead_id for e in sleeping})).execution_options(populate_existing=True)).scalars()}
    since = min(e.entered_at for e in sleeping) - timedelta(days=400)  # `within` windows may reach before entry
    events = events_of(session, leads, since)
    woken = 0
    for enrollment in sleeping:
        plan = plan_for_version(session, enrollment.version_id)
        facts = lead_facts(leads[enrollment.lead_id], scoring)
        if state_wait_holds(plan, state_of(enrollment), facts, events.get(enrollment.lead_id, []), now):
            enrollment.due_at = now
            woken += 1
    session.flush()
    return woken


def due_now(session: Session, lead_ids: Iterable[int], *, now: datetime) -> dict[str, int]:
    """How many active enrollments of these leads are due by `now`, by scenario: whom to announce
    (relance.prefect_adapter.Announcer), so that their ticks run within seconds rather than at the next schedule."""
    from sqlalchemy import func

    ids, due = sorted(set(lead_ids)), defaultdict(int)
    for start in range(0, len(ids), 1000):  # an IN list the database takes, however big the batch
        query = (select(Enrollment.scenario, func.count()).where(
            Enrollment.lead_id.in_(ids[start:start + 1000]), Enrollment.status == "active", Enrollment.due_at <= now)
            .group_by(Enrollment.scenario))
        for scenario, count in session.exec(query).all():
            due[scenario] += count
    return dict(due)
