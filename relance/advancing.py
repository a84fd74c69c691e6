"""Advancing: claim one batch of due enrollments, run the interpreter on each, write what it decided, in one transaction.

A batch is claimed `FOR UPDATE SKIP LOCKED` on PostgreSQL, so parallel ticks never advance a lead twice; one
enrollment that cannot be advanced is found by halving the batch and leaves as `failed`, the others go on.
The effects of the steps are written by `relance.effects`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Sequence

from sqlalchemy import Engine, Row, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session

from relance.effects import CHANGES_LEAD, Applying, Written, apply_effect
from relance.engine.interpreter import advance
from relance.engine.types import Effect, NotReady
from relance.enrollment import enroll_leads, events_of, lead_facts, state_of, state_values
from relance.plans import current_version_ids, plan_for_version
from relance.sales import last_rejections, ready_for_sales
from relance.scenario.plan import Plan
from relance.scoring.ledger import ScoreLedger
from relance.settings import Settings
from relance.store.repo import claim_due_enrollments, insert_outbox_rows, insert_rows, write_back
from relance.store.tables import Enrollment, Lead, Outbox, StepLog
from relance.wakes import wake_for_lead_changes
from relance.workspace import Workspace


@dataclass
class BatchResult:
    """What advancing one batch did: how many moved, the outbox rows they wrote, their step outcomes."""

    advanced: int = 0
    outbox_ids: list[int] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # (step_id, outcome) -> n
    failed: list[str] = field(default_factory=list)  # "email: reason" of each enrollment that left on an error

    def merge(self, other: "BatchResult") -> None:
        self.advanced += other.advanced
        self.outbox_ids = sorted(self.outbox_ids + other.outbox_ids)
        self.counts.update(other.counts)
        self.failed.extend(other.failed)


def advance_due(
    engine: Engine, settings: Settings, *, scenario: str, now: datetime, workspace: Workspace, limit: int | None = None,
) -> BatchResult:
    """Claim one batch of due enrollments and advance them, in one transaction.

    On PostgreSQL the batch is claimed `FOR UPDATE SKIP LOCKED` and the locks are held until
    the commit, so ticks running in parallel (more workers) never advance the same lead twice.
    Enrollments, step logs and outbox rows are written back in bulk, one statement each.

    One enrollment that cannot be advanced (a lead's data the database refuses, a bug on one
    branch) never holds back the others: the batch is rolled back and advanced again in halves
    until the culprit stands alone; it leaves the scenario as `failed`, with its step and reason.

    So it takes the engine and owns its transactions, by design (docs/architecture.md, "Transactions"): one per
    attempt (claim, advance, commit), then one per half after a rollback; the caller (the tick's advance task)
    owns none of them, and the emails the batch wrote are sent after its commit.
    """
    return _advance_splitting(engine, None, limit=limit or settings.batch_size, scenario=scenario, workspace=workspace,
                              now=now)


def _not_the_batchs_fault(exc: Exception) -> bool:
    """The database is unreachable, locked or broke a deadlock: the batch itself is fine, try again later."""
    return isinstance(exc, (OperationalError, InterfaceError)) or getattr(exc, "connection_invalidated", False)


def _advance_splitting(engine: Engine, ids: list[int] | None, *, limit: int, scenario: str, workspace: Workspace,
                       now: datetime) -> BatchResult:
    """Claim these enrollments (or the next `limit` due) and advance them; if one cannot be advanced, roll back
    and advance each half the same way, so the culprit ends up alone and leaves as failed."""
    with Session(engine) as session:
        claimed = claim_due_enrollments(session, scenario=scenario, now=now, limit=limit, ids=ids)
        try:
            return _advance_claimed(session, claimed, workspace=workspace, now=now)
        except Exception as exc:  # noqa: BLE001 - sorted out here
            session.rollback()
            if _not_the_batchs_fault(exc):
                raise
            if len(claimed) == 1:
                return _fail_enrollment(session, claimed[0].id, exc, scenario=scenario, now=now)
    ids = [row.id for row in claimed]
    result = BatchResult()
    for half in (ids[: len(ids) // 2], ids[len(ids) // 2:]):
        result.merge(_advance_splitting(engine, half, limit=len(half), scenario=scenario, workspace=workspace,
                                        now=now))
    return result


def _fail_enrollment(session: Session, enrollment_id: int, exc: Exception, *, scenario: str, now: datetime) -> BatchResult:
    """Take one enrollment out of its scenario as `failed`, saying at which step and why; the others go on."""
    result = BatchResult()
    claimed = claim_due_enrollments(session, scenario=scenario, now=now, limit=1, ids=[enrollment_id])
    if not claimed:
        return result  # someone else advanced it meanwhile
    row = claimed[0]
    reason = f"error at step {row.step_id}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}".rstrip(": ")
    session.execute(update(Enrollment).where(Enrollment.id == row.id).values(
        status="failed", due_at=None, waiting=None, left_at=now, exit_reason=reason))
    insert_rows(session, StepLog.__table__, [dict(
        enrollment_id=row.id, lead_id=row.lead_id, scenario=row.scenario, version_id=row.version_id, step_id=row.step_id,
        kind="exit", outcome="failed", at=now, detail={"error": reason})])
    session.commit()
    email = session.execute(select(Lead.email).where(Lead.id == row.lead_id)).scalar()
    result.advanced, result.counts[(row.step_id, "failed")] = 1, 1
    result.failed.append(f"{email}: {reason}")
    return result


def _advance_claimed(session: Session, claimed: Sequence[Row], *, workspace: Workspace, now: datetime) -> BatchResult:
    """Advance claimed enrollments and commit; raises (nothing committed) if any of them cannot be."""
    scoring = workspace.scoring
    result = BatchResult()
    leads = {lead.id: lead for lead in session.execute(
        select(*Lead.__table__.c).where(Lead.id.in_({e.lead_id for e in claimed}))).all()}
    since = min((e.entered_at for e in claimed), default=now) - timedelta(days=400)
    events = events_of(session, leads, since)
    rejections = last_rejections(session, leads)  # a rejected lead cools off: its hand-off steps wait
    updates: list[dict[str, Any]] = []
    step_logs: list[dict[str, Any]] = []
    effects: list[_Pending] = []  # applied once the leads they change are loaded
    for enrollment in claimed:
        if enrollment.status != "active" or enrollment.due_at is None or enrollment.due_at > now:
            continue  # advanced by someone else since it was claimed
        lead = leads[enrollment.lead_id]
        plan = plan_for_version(session, enrollment.version_id)
        history = events.get(lead.id, [])
        outcome = advance(
            plan, state_of(enrollment), lead_facts(lead, scoring), history, now,
            handoff_ready=lambda facts, history=history, lead=lead: ready_for_sales(
                scoring, score=facts.score, grade=facts.grade, events=history, rejection=rejections.get(lead.id), now=now)
            if lead.suppressed is None else NotReady(why=f"address suppressed ({lead.suppressed})", reason="address suppressed"),
        )
        if outcome.state.status == "active" and (outcome.state.due_at is None or outcome.state.due_at <= now):
            outcome.state.status, outcome.state.due_at = "failed", None
            outcome.state.exit_reason = f"stuck at step {outcome.state.step_id}: the interpreter left it due"
        updates.append({"id": enrollment.id, **state_values(outcome.state)})
        for trace in outcome.trace:
            step_logs.append(dict(
                enrollment_id=enrollment.id, lead_id=lead.id, scenario=plan.name, version_id=enrollment.version_id,
                step_id=trace.step_id, kind=trace.kind, outcome=trace.outcome, at=trace.at, detail=dict(trace.detail),
            ))
            result.counts[(trace.step_id, trace.outcome)] += 1
        effects.extend((effect, enrollment.id, lead, outcome.state.memory, plan) for effect in outcome.effects)
        if outcome.state.status == "failed":
            result.failed.append(f"{lead.email}: {outcome.state.exit_reason}")
        result.advanced += 1
    write_back(session, Enrollment.__table__, updates)
    insert_rows(session, StepLog.__table__, step_logs)
    outbox_rows = _apply_effects(session, effects, workspace=workspace, now=now)
    new_ids = insert_outbox_rows(session, outbox_rows)
    session.commit()
    if len(new_ids) < len(outbox_rows):  # some were there already: a crashed run left them pending, send them now
        keys = {(row["enrollment_id"], row["step_id"], row["visit"]) for row in outbox_rows}
        candidates = session.execute(
            select(Outbox.id, Outbox.enrollment_id, Outbox.step_id, Outbox.visit)
            .where(Outbox.enrollment_id.in_({k[0] for k in keys}), Outbox.status == "pending")
        ).all()
        new_ids = [o.id for o in candidates if (o.enrollment_id, o.step_id, o.visit) in keys]
    result.outbox_ids = sorted(new_ids)
    return result


_Pending = tuple[Effect, int, Any, dict[str, Any], Plan]  # (effect, enrollment id, lead row, memory, plan)


def _apply_effects(session: Session, effects: Sequence[_Pending], *, workspace: Workspace, now: datetime) -> list[dict[str, Any]]:
    """Apply a batch's effects, wake the waits its lead changes may end, enroll whom `enroll` steps name;
    returns the outbox rows to write."""
    scoring = workspace.scoring
    # leads are read as plain rows; the few an effect changes (score, stage, fields, hand-off) as models
    changing = {lead.id for effect, _, lead, _, _ in effects if isinstance(effect, CHANGES_LEAD)}
    models = {m.id: m for m in session.exec(select(Lead).where(Lead.id.in_(changing))).scalars()} if changing else {}
    written = Written()
    ledger = ScoreLedger(session)  # the batch's `score` steps, written in one INSERT
    for effect, enrollment_id, lead, memory, plan in effects:
        apply_effect(effect, Applying(session=session, ledger=ledger, scoring=scoring, lead=models.get(lead.id, lead),
                                      enrollment_id=enrollment_id, memory=memory, plan=plan, now=now, written=written))
    ledger.write()
    session.flush()
    if changing:  # a score, set or hand-off step may end a wait on this lead's state in another scenario
        wake_for_lead_changes(session, changing, scoring=scoring, now=now, skip_locked=True)  # this batch holds its own
    versions = current_version_ids(session) if written.enroll_into else {}
    by_target: dict[str, list[Any]] = defaultdict(list)
    for target, lead in written.enroll_into:
        by_target[target].append(lead)
    for target, leads_in in sorted(by_target.items()):  # one bulk enrollment per target scenario
        if (target in workspace.plans or target in workspace.waiting) and target in versions:  # a broken file: its last version
            enroll_leads(session, plan=plan_for_version(session, versions[target]), version_id=versions[target],
                         leads=leads_in, scoring=scoring, now=now)
    return written.outbox_rows
