"""Enrollment: what the engine sees of leads and events, and putting leads into a scenario.

Facts and states are read here for every service (advancing, wakes, ingestion); entering is written in bulk,
and the database decides who enters when two workers try at once.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from sqlalchemy import Row, select
from sqlmodel import Session

from relance.engine.conditions import holds
from relance.engine.interpreter import enter
from relance.engine.triggers import may_enter
from relance.engine.types import EnrollmentState, EventFact, LeadFacts
from relance.plans import current_version_ids
from relance.scenario.model import EVENT_CONDITIONS, SegmentTrigger, nested
from relance.scenario.plan import Plan
from relance.scoring.config import ScoringConfig
from relance.store.repo import insert_enrollments, insert_rows
from relance.store.segments import may_enter_again, narrowing
from relance.store.tables import Enrollment, Event, Lead, StepLog
from relance.workspace import Workspace


def lead_facts(lead: Lead, scoring: ScoringConfig) -> LeadFacts:
    """What the engine sees of a lead (an ORM object or a plain row)."""
    return LeadFacts(
        id=lead.id,
        email=lead.email,
        stage=lead.stage,
        score=lead.score,
        grade=lead.grade,
        temperature=scoring.temperature_of(lead.score),
        tags=frozenset(lead.tags or ()),
        fields=dict(lead.fields or {}),
        timezone=lead.timezone or "UTC",
    )


def event_fact(event: Event) -> EventFact:
    """What the engine sees of a stored event."""
    return EventFact(type=event.type, occurred_at=event.occurred_at, properties=dict(event.properties or {}))


def events_of(session: Session, lead_ids: Iterable[int], since: datetime) -> dict[int, list[EventFact]]:
    """Events of a batch of leads since a time, in one query."""
    ids = list(set(lead_ids))
    found: dict[int, list[EventFact]] = defaultdict(list)
    if not ids:
        return found
    rows = session.exec(
        select(Event).where(Event.lead_id.in_(ids), Event.occurred_at >= since).order_by(Event.occurred_at)
    ).scalars()
    for event in rows:
        found[event.lead_id].append(event_fact(event))
    return found


def state_values(state: EnrollmentState) -> dict[str, Any]:
    """The enrollment columns an interpreter state sets."""
    return {
        "step_id": state.step_id, "status": state.status, "due_at": state.due_at, "waiting": state.waiting,
        "step_entered_at": state.step_entered_at, "left_at": state.left_at, "exit_reason": state.exit_reason,
        "state": dict(state.memory),
    }


def state_of(enrollment) -> EnrollmentState:
    """The interpreter state of an enrollment (an ORM object or a claimed row)."""
    return EnrollmentState(
        step_id=enrollment.step_id,
        status=enrollment.status,
        due_at=enrollment.due_at,
        waiting=enrollment.waiting,
        entered_at=enrollment.entered_at,
        step_entered_at=enrollment.step_entered_at,
        left_at=enrollment.left_at,
        exit_reason=enrollment.exit_reason,
        memory=dict(enrollment.state or {}),
    )


# --------------------------------------------------------------------------- enrolling


def enroll_leads(
    session: Session, *, plan: Plan, version_id: int, leads: Sequence[Lead], scoring: ScoringConfig, now: datetime,
    due_at: datetime | None = None,
) -> int:
    """Enroll leads into a scenario where its `reentry` allows; returns how many entered.

    `due_at` delays the first step (a "later" lead re-engaged on its date). Enrollments and their
    `entered` step logs are written in bulk, one statement each. The reading of past enrollments
    here only saves work: the database decides (`insert_enrollments`), so two workers enrolling
    the same lead at the same moment enroll it once."""
    if not leads:
        return 0
    previous: dict[int, list[Row]] = defaultdict(list)
    for enrollment in session.execute(
        select(Enrollment.lead_id, Enrollment.entered_at, Enrollment.status)
        .where(Enrollment.scenario == plan.name, Enrollment.lead_id.in_({l.id for l in leads}))
    ).all():
        previous[enrollment.lead_id].append(enrollment)
    rows: list[dict[str, Any]] = []
    entering: set[int] = set()
    for lead in leads:
        past = previous[lead.id]
        if lead.id in entering or not may_enter(
            plan.scenario.reentry,
            previous_entries=[e.entered_at for e in past],
            active=any(e.status == "active" for e in past),
            now=now,
        ):
            continue
        state = enter(plan, lead_facts(lead, scoring), now)
        if due_at is not None:
            state.due_at = max(due_at, now)
        rows.append(dict(lead_id=lead.id, scenario=plan.name, version_id=version_id, entered_at=now, **state_values(state)))
        entering.add(lead.id)
    if not rows:
        return 0
    entered = insert_enrollments(session, rows, reentry=plan.scenario.reentry, now=now)
    insert_rows(session, StepLog.__table__, [
        dict(enrollment_id=enrollment_id, lead_id=lead_id, scenario=plan.name, version_id=version_id,
             step_id=plan.first, kind="enter", outcome="entered", at=now, detail={})
        for enrollment_id, lead_id in entered
    ])
    return len(entered)


def enroll_due(session: Session, *, scenario: str, workspace: Workspace, now: datetime, batch_size: int,
               commit: bool = False) -> int:
    """Segment triggers: enroll every lead that newly matches; event triggers enroll at ingestion.

    `batch_size` leads at a time, in the caller's transaction; with `commit`, each chunk is committed as it is
    written (what the tick does: a big segment holds no lock for long), as `import_leads` does."""
    plan = workspace.plans[scenario]
    trigger = plan.scenario.trigger
    if not isinstance(trigger, SegmentTrigger):
        return 0
    needs_events = _mentions_events(trigger.segment)
    # only leads that may match and may enter again are read; `holds` and `may_enter` decide exactly
    candidates = [Lead.suppressed.is_(None), may_enter_again(scenario, plan.scenario.reentry, now)]
    if (narrowed := narrowing(trigger.segment)) is not None:
        candidates.append(narrowed)
    entered = 0
    version_id = current_version_ids(session)[scenario]
    last_id = 0
    while True:
        leads = session.exec(
            select(Lead).where(Lead.id > last_id, *candidates).order_by(Lead.id).limit(batch_size)
        ).scalars().all()
        if not leads:
            break
        last_id = leads[-1].id
        events = events_of(session, [l.id for l in leads], now - timedelta(days=3650)) if needs_events else {}
        matching = [
            lead for lead in leads
            if holds(trigger.segment, lead=lead_facts(lead, workspace.scoring), events=events.get(lead.id, []),
                     now=now, since=lead.created_at, scenario=scenario)
        ]
        entered += enroll_leads(session, plan=plan, version_id=version_id, leads=matching, scoring=workspace.scoring, now=now)
        if commit:
            session.commit()
    session.flush()
    return entered


def _mentions_events(condition: Any) -> bool:
    """Whether a segment needs the leads' events read (it tests one somewhere in its tree)."""
    return any(isinstance(inner, EVENT_CONDITIONS) for inner, _ in nested(condition))
