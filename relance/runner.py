"""The side-effecting half of a tick, in batches: enroll, claim, advance, deliver.

Prefect tasks in `tasks/` wrap these functions one each; the CLI and the tests call them
directly. Nothing here imports Prefect. Every function works on a batch of enrollments or
outbox rows, never on one lead at a time.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence
from weakref import WeakKeyDictionary

import httpx
from sqlalchemy import Engine, Row, bindparam, func, insert, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session

from relance.email import tracking
from relance.email.message import OutgoingEmail, sender_name
from relance.email.templates import TemplateLibrary
from relance.email.transports import DeliveryError, OutcomeUnknown, Transport, make_transport
from relance.engine.conditions import holds
from relance.engine.interpreter import advance, enter
from relance.engine.triggers import may_enter
from relance.engine.types import (
    AdjustScore,
    ChangeLead,
    EnrollInto,
    EnrollmentState,
    EventFact,
    HandOff,
    LeadFacts,
    NotifySomeone,
    SendEmail,
)
from relance.library import Library, load_library
from relance.scenario.model import EVENT_CONDITIONS, SegmentTrigger
from relance.scenario.plan import Plan, plan_from_definition
from relance.scoring.config import ScoringConfig
from relance.sales import hand_off, last_rejections, ready_for_sales
from relance.scoring.ledger import add_points, move_stage, reach_mql
from relance.settings import SettingError, Settings
from relance.store.db import StoreUnavailable, make_engine, migrate
from relance.store.repo import (
    claim_due_enrollments, ensure_scenario_version, insert_enrollments, insert_outbox_rows, insert_rows, write_back,
)
from relance.store.segments import may_enter_again, narrowing
from relance.store.tables import Enrollment, Event, Lead, Outbox, ScenarioVersion, StepLog
from relance import webhooks
from relance.outbox import REQUEUED, alert_for, is_staff_mail, mark_cut_off, requeued_since


class TickError(RuntimeError):
    """The tick could not do all its work; the message says what is left and where."""


class RetryableDelivery(RuntimeError):
    """Some messages could not be delivered for a reason a retry may fix (throttling, timeouts)."""

    def __init__(self, message: str, result: "DeliveryResult | None" = None) -> None:
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------- store and plans


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


def sync_scenarios(engine: Engine, settings: Settings, *, now: datetime, library: Library | None = None) -> dict[str, int]:
    """Register the current version of every scenario in the folder; name -> version id."""
    library = library or load_library(settings)
    with Session(engine) as session:
        ids = {
            name: ensure_scenario_version(session, plan=plan, source_path=str(library.paths[name]), now=now).id
            for name, plan in library.plans.items()
        }
        session.commit()
    return ids


def current_version_ids(session: Session) -> dict[str, int]:
    """The newest registered version of each scenario."""
    rows = session.exec(
        select(ScenarioVersion.scenario, func.max(ScenarioVersion.id)).group_by(ScenarioVersion.scenario)
    ).all()
    return {name: version_id for name, version_id in rows}


# --------------------------------------------------------------------------- facts


def lead_facts(lead: Lead, scoring: ScoringConfig) -> LeadFacts:
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
        rows.append(dict(lead_id=lead.id, scenario=plan.name, version_id=version_id, entered_at=now, **_state_values(state)))
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


def enroll_due(engine: Engine, settings: Settings, *, scenario: str, now: datetime, library: Library | None = None) -> int:
    """Segment triggers: enroll every lead that newly matches; event triggers enroll at ingestion."""
    library = library or load_library(settings)
    plan = library.plans[scenario]
    trigger = plan.scenario.trigger
    if not isinstance(trigger, SegmentTrigger):
        return 0
    needs_events = _mentions_events(trigger.segment)
    # only leads that may match and may enter again are read; `holds` and `may_enter` decide exactly
    candidates = [Lead.suppressed.is_(None), may_enter_again(scenario, plan.scenario.reentry, now)]
    if (narrowed := narrowing(trigger.segment)) is not None:
        candidates.append(narrowed)
    entered = 0
    with Session(engine) as session:
        version_id = current_version_ids(session)[scenario]
        last_id = 0
        while True:
            leads = session.exec(
                select(Lead).where(Lead.id > last_id, *candidates).order_by(Lead.id).limit(settings.batch_size)
            ).scalars().all()
            if not leads:
                break
            last_id = leads[-1].id
            events = events_of(session, [l.id for l in leads], now - timedelta(days=3650)) if needs_events else {}
            matching = [
                lead for lead in leads
                if holds(trigger.segment, lead=lead_facts(lead, library.scoring), events=events.get(lead.id, []),
                         now=now, since=lead.created_at, scenario=scenario)
            ]
            entered += enroll_leads(session, plan=plan, version_id=version_id, leads=matching, scoring=library.scoring, now=now)
            session.commit()
    return entered


def _mentions_events(condition: Any) -> bool:
    if isinstance(condition, EVENT_CONDITIONS):
        return True
    children = getattr(condition, "all", None) or getattr(condition, "any", None) or []
    if getattr(condition, "not_", None) is not None:
        children = [condition.not_]
    return any(_mentions_events(child) for child in children)


# --------------------------------------------------------------------------- advancing


@dataclass
class BatchResult:
    advanced: int = 0
    outbox_ids: list[int] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # (step_id, outcome) -> n
    failed: list[str] = field(default_factory=list)  # "email: reason" of each enrollment that left on an error

    def merge(self, other: "BatchResult") -> None:
        self.advanced += other.advanced
        self.outbox_ids = sorted(self.outbox_ids + other.outbox_ids)
        self.counts.update(other.counts)
        self.failed.extend(other.failed)


def _state_values(state: EnrollmentState) -> dict[str, Any]:
    """The enrollment columns an interpreter state sets."""
    return {
        "step_id": state.step_id, "status": state.status, "due_at": state.due_at, "waiting": state.waiting,
        "step_entered_at": state.step_entered_at, "left_at": state.left_at, "exit_reason": state.exit_reason,
        "state": dict(state.memory),
    }


def _state_of(enrollment) -> EnrollmentState:
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


def advance_due(
    engine: Engine, settings: Settings, *, scenario: str, now: datetime, limit: int | None = None,
    library: Library | None = None,
) -> BatchResult:
    """Claim one batch of due enrollments and advance them, in one transaction.

    On PostgreSQL the batch is claimed `FOR UPDATE SKIP LOCKED` and the locks are held until
    the commit, so ticks running in parallel (more workers) never advance the same lead twice.
    Enrollments, step logs and outbox rows are written back in bulk, one statement each.

    One enrollment that cannot be advanced (a lead's data the database refuses, a bug on one
    branch) never holds back the others: the batch is rolled back and advanced again in halves
    until the culprit stands alone; it leaves the scenario as `failed`, with its step and reason.
    """
    library = library or load_library(settings)
    return _advance_splitting(engine, None, limit=limit or settings.batch_size, scenario=scenario, library=library,
                              settings=settings, now=now)


def _not_the_batchs_fault(exc: Exception) -> bool:
    """The database is unreachable, locked or broke a deadlock: the batch itself is fine, try again later."""
    return isinstance(exc, (OperationalError, InterfaceError)) or getattr(exc, "connection_invalidated", False)


def _advance_splitting(engine: Engine, ids: list[int] | None, *, limit: int, scenario: str, library: Library,
                       settings: Settings, now: datetime) -> BatchResult:
    """Claim these enrollments (or the next `limit` due) and advance them; if one cannot be advanced, roll back
    and advance each half the same way, so the culprit ends up alone and leaves as failed."""
    with Session(engine) as session:
        claimed = claim_due_enrollments(session, scenario=scenario, now=now, limit=limit, ids=ids)
        try:
            return _advance_claimed(session, claimed, library=library, settings=settings, now=now)
        except Exception as exc:  # noqa: BLE001 - sorted out here
            session.rollback()
            if _not_the_batchs_fault(exc):
                raise
            if len(claimed) == 1:
                return _fail_enrollment(session, claimed[0].id, exc, scenario=scenario, now=now)
    ids = [row.id for row in claimed]
    result = BatchResult()
    for half in (ids[: len(ids) // 2], ids[len(ids) // 2:]):
        result.merge(_advance_splitting(engine, half, limit=len(half), scenario=scenario, library=library,
                                        settings=settings, now=now))
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


def _advance_claimed(session: Session, claimed: Sequence[Row], *, library: Library, settings: Settings,
                     now: datetime) -> BatchResult:
    """Advance claimed enrollments and commit; raises (nothing committed) if any of them cannot be."""
    scoring = library.scoring
    result = BatchResult()
    leads = {lead.id: lead for lead in session.execute(
        select(*Lead.__table__.c).where(Lead.id.in_({e.lead_id for e in claimed}))).all()}
    since = min((e.entered_at for e in claimed), default=now) - timedelta(days=400)
    events = events_of(session, leads, since)
    rejections = last_rejections(session, leads)  # a rejected lead cools off: its hand-off steps wait
    updates: list[dict[str, Any]] = []
    step_logs: list[dict[str, Any]] = []
    effects: list[tuple[Any, int, Any, dict[str, Any], Plan]] = []  # applied once the leads they change are loaded
    for enrollment in claimed:
        if enrollment.status != "active" or enrollment.due_at is None or enrollment.due_at > now:
            continue  # advanced by someone else since it was claimed
        lead = leads[enrollment.lead_id]
        plan = plan_for_version(session, enrollment.version_id)
        history = events.get(lead.id, [])
        outcome = advance(
            plan, _state_of(enrollment), lead_facts(lead, scoring), history, now,
            handoff_ready=lambda facts, history=history, lead=lead: lead.suppressed is None and ready_for_sales(
                scoring, score=facts.score, grade=facts.grade, events=history, rejection=rejections.get(lead.id), now=now),
        )
        if outcome.state.status == "active" and (outcome.state.due_at is None or outcome.state.due_at <= now):
            outcome.state.status, outcome.state.due_at = "failed", None
            outcome.state.exit_reason = f"stuck at step {outcome.state.step_id}: the interpreter left it due"
        updates.append({"id": enrollment.id, **_state_values(outcome.state)})
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
    # leads are read as plain rows; the few an effect changes (score, stage, fields, hand-off) as models
    changing = {lead.id for effect, _, lead, _, _ in effects if isinstance(effect, _CHANGES_LEAD)}
    models = {m.id: m for m in session.exec(select(Lead).where(Lead.id.in_(changing))).scalars()} if changing else {}
    outbox_rows: list[dict[str, Any]] = []
    enroll_into: list[tuple[str, Any]] = []
    for effect, enrollment_id, lead, memory, plan in effects:
        _apply(effect, session=session, scoring=scoring, lead=models.get(lead.id, lead), enrollment_id=enrollment_id,
               memory=memory, plan=plan, settings=settings, now=now, outbox_rows=outbox_rows, enroll_into=enroll_into)
    session.flush()
    if changing:  # a score, set or hand-off step may end a wait on this lead's state in another scenario
        from relance.wakes import wake_for_lead_changes  # here: relance.wakes reads plans and facts from this module

        wake_for_lead_changes(session, changing, scoring=scoring, now=now, skip_locked=True)  # this batch holds its own
    versions = current_version_ids(session) if enroll_into else {}
    by_target: dict[str, list[Any]] = defaultdict(list)
    for target, lead in enroll_into:
        by_target[target].append(lead)
    for target, leads_in in sorted(by_target.items()):  # one bulk enrollment per target scenario
        if (target in library.plans or target in library.waiting) and target in versions:  # a broken file: its last version
            enroll_leads(session, plan=plan_for_version(session, versions[target]), version_id=versions[target],
                         leads=leads_in, scoring=scoring, now=now)
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


_CHANGES_LEAD = (AdjustScore, ChangeLead, HandOff)


def _apply(effect, *, session: Session, scoring: ScoringConfig, lead: Lead, enrollment_id: int, memory: dict[str, Any],
           plan: Plan, settings: Settings, now: datetime, outbox_rows: list[dict[str, Any]],
           enroll_into: list[tuple[str, Lead]]) -> None:
    match effect:
        case SendEmail():
            outbox_rows.append(dict(
                enrollment_id=enrollment_id, step_id=effect.step_id, visit=effect.visit, lead_id=lead.id,
                scenario=plan.name, template=effect.template, subject=effect.subject, to_address=lead.email,
                options={"from": effect.from_, "reply_to": effect.reply_to, "preheader": effect.preheader, "kind": "lead"},
                status="pending", attempts=0, created_at=now,
            ))
        case AdjustScore():
            add_points(session, lead, effect.points, cause="step", now=now, scenario=plan.name, step_id=effect.step_id)
            reach_mql(session, lead, scoring, now=now)
        case ChangeLead():
            if effect.stage:
                move_stage(session, lead, effect.stage, now=now, by=f"{plan.name}/{effect.step_id}", reason="scenario step")
            if effect.fields:
                lead.fields = {**(lead.fields or {}), **effect.fields}
            if effect.tags:
                lead.tags = sorted(set(lead.tags or ()) | set(effect.tags))
            lead.updated_at = now
        case HandOff():
            hand_off(session, lead, scoring=scoring, now=now, source=f"{plan.name}/{effect.step_id}", owner=effect.owner, team=effect.team)
        case NotifySomeone():
            common = dict(enrollment_id=enrollment_id, step_id=effect.step_id, lead_id=lead.id, scenario=plan.name,
                          visit=memory.get("visits", {}).get(effect.step_id, 1) - 1, status="pending", attempts=0, created_at=now)
            if effect.email:
                outbox_rows.append(dict(
                    common, template=effect.template or "sales-handoff",
                    subject=effect.subject or "Lead à suivre : {{ lead.first_name }} {{ lead.last_name }} ({{ lead.company }})",
                    to_address=effect.email, options={"kind": "internal"},
                ))
            elif effect.webhook:
                outbox_rows.append(dict(common, template="", subject="", to_address=effect.webhook, options={"kind": "webhook"}))
        case EnrollInto():
            enroll_into.append((effect.scenario, lead))


# --------------------------------------------------------------------------- delivering


@dataclass
class DeliveryResult:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    retryable: int = 0
    unknown: int = 0  # handed over, no answer: it may have left; never resent without an operator's decision
    errors: list[str] = field(default_factory=list)
    cut_off: list[int] = field(default_factory=list)  # rows an earlier run left `sending`, found and made `unknown`

    def merge(self, other: "DeliveryResult") -> None:
        self.sent, self.skipped, self.failed = self.sent + other.sent, self.skipped + other.skipped, self.failed + other.failed
        self.retryable, self.unknown = self.retryable + other.retryable, self.unknown + other.unknown
        self.errors.extend(other.errors)
        self.cut_off.extend(other.cut_off)


def template_context(lead: Lead, settings: Settings, outbox: Outbox, unsubscribe: str | None = None) -> dict[str, Any]:
    """What every template can use (see relance.email.templates); `unsubscribe` if already signed.

    Internal emails (hand-off, SLA, notify) go to staff: they carry no link of the lead's
    (a rep who clicks "unsubscribe" in his own mail must not unsubscribe the lead) and say `internal`."""
    internal = (outbox.options or {}).get("kind", "lead") != "lead"
    return {
        "lead": {
            "email": lead.email, "first_name": lead.first_name, "last_name": lead.last_name,
            "job_title": lead.job_title, "company": lead.company, "sector": lead.sector,
            "country": lead.country, "score": lead.score, "grade": lead.grade, "stage": lead.stage,
            "fields": dict(lead.fields or {}),
        },
        "internal": internal,
        "unsubscribe_url": None if internal else unsubscribe or tracking.unsubscribe_url(
            public_url=settings.public_url, secret=settings.secret_key, outbox_id=outbox.id, lead_id=lead.id, email=lead.email
        ),
        "postal_address": settings.postal_address,
        "sender": sender_name(settings.from_),
        "preheader": (outbox.options or {}).get("preheader") or "",
        "scenario": outbox.scenario,
        "step_id": outbox.step_id,
        **(outbox.options or {}).get("context", {}),
    }


_OUTBOX_READ = ("id", "lead_id", "to_address", "template", "subject", "options", "scenario", "step_id")
_LEAD_READ = ("id", "email", "first_name", "last_name", "job_title", "company", "sector", "country", "score", "grade",
              "stage", "fields", "suppressed")  # what sending and `template_context` read


def _compose(row, lead, *, settings: Settings, templates: TemplateLibrary) -> OutgoingEmail:
    """The email an outbox row stands for: rendered, and for a lead tracked with one-click unsubscribe,
    its unsubscribe link and postal address shown (relance's footer when the template has none)."""
    if row.options.get("kind", "lead") != "lead":
        rendered = templates.render(row.template, subject=row.subject, context=template_context(lead, settings, row),
                                    preheader=row.options.get("preheader"))
        html, headers = rendered.html, {}
    else:  # leads get tracked links, an open pixel and one-click unsubscribe
        identity = dict(public_url=settings.public_url, secret=settings.secret_key, outbox_id=row.id,
                        lead_id=lead.id, email=lead.email)
        unsubscribe = tracking.unsubscribe_url(**identity)
        rendered = templates.render(row.template, subject=row.subject, context=template_context(lead, settings, row, unsubscribe),
                                    preheader=row.options.get("preheader"), to_lead=True)  # footer added if the template lacks it
        html = tracking.track_html(rendered.html, **identity, skip=(unsubscribe,))
        headers = tracking.unsubscribe_headers(unsubscribe)
    return OutgoingEmail(
        to=row.to_address, from_=row.options.get("from") or settings.from_,
        reply_to=row.options.get("reply_to") or settings.reply_to, subject=rendered.subject, html=html,
        text=rendered.text, headers=headers, tags={"scenario": row.scenario or "none", "step": row.step_id or "none"},
        outbox_id=row.id,
    )


def deliver(
    engine: Engine,
    settings: Settings,
    *,
    outbox_ids: list[int],
    now: datetime,
    transport: Transport | None = None,
    templates: TemplateLibrary | None = None,
) -> DeliveryResult:
    """Render and send pending outbox rows, one at a time, so that a crash strands at most the one in flight.

    Each row is marked `sending` (only if still `pending`: a cancelled or already taken row is left
    alone) and committed before it is handed to the transport; its outcome is written in the same
    commit that marks the next one. Outcomes: sent; pending again when the transport proves it did
    not leave and a retry may help; failed (refused, or this row's own data cannot make an email);
    unknown (handed over, no answer: never resent without an operator's decision)."""
    transport = transport or make_transport(settings)
    templates = templates or TemplateLibrary(settings.templates_dir)
    result = DeliveryResult()
    outbox = Outbox.__table__
    # Core, not the ORM: one commit per message is the price of exactly-once, so each costs only its statements
    with engine.connect() as connection:
        rows = sorted(connection.execute(
            select(*(outbox.c[name] for name in _OUTBOX_READ)).where(outbox.c.id.in_(outbox_ids), outbox.c.status == "pending")
        ).all(), key=lambda row: row.id)
        lead_columns = [Lead.__table__.c[name] for name in _LEAD_READ]
        leads = {l.id: l for l in connection.execute(select(*lead_columns).where(Lead.id.in_({r.lead_id for r in rows}))).all()}
        settled: list[tuple[int, str, dict[str, Any]]] = []  # (id, status it must still have, new values)
        alerts = _Alerts(settings, now, result)
        client: httpx.Client | None = None
        unanswered = 0  # unknown outcomes in a row: the transport hangs, stop feeding it
        try:
            for position, row in enumerate(rows):
                if unanswered >= UNANSWERED_IN_A_ROW:
                    left = len(rows) - position
                    result.retryable += left
                    result.errors.append(f"stopped after {unanswered} sends in a row got no answer: {left} message(s) "
                                         "left pending for a retry, none of them handed over")
                    break
                lead = leads[row.lead_id]
                kind = row.options.get("kind", "lead")
                if kind == "lead" and lead.suppressed:  # notifications about a lead still reach sales and systems
                    settled.append((row.id, "pending", {"status": "skipped", "error": f"suppressed: {lead.suppressed}"}))
                    result.skipped += 1
                    continue
                try:
                    if kind == "webhook":
                        client = client or webhooks.client()  # direct: a proxy would bypass the destination check
                        body = webhooks.payload(lead=lead, scenario=row.scenario, step_id=row.step_id, at=now)
                        send = lambda: webhooks.post(client, row.to_address, body, secret=settings.secret_key, outbox_id=row.id,
                                                     allow=settings.webhook_allow)
                        subject = row.subject
                    else:
                        email = _compose(row, lead, settings=settings, templates=templates)
                        send, subject = (lambda: transport.send(email)), email.subject
                except Exception as exc:  # noqa: BLE001 - this row's data cannot make a message; the others go on
                    settled.append((row.id, "pending", {"status": "failed", "error": f"cannot be built: {_why(exc)}"}))
                    result.failed += 1
                    result.errors.append(f"outbox {row.id} to {row.to_address!r} ({row.template or kind}): {_why(exc)}")
                    alerts.note(row, settled[-1][2])
                    continue
                _settle(connection, settled, alerts.rows)
                taken = connection.execute(_CLAIM, {"_id": row.id, "_at": now}).rowcount
                connection.commit()
                if taken:  # else cancelled (suppressed) or sent by another run since we read it
                    before = result.unknown
                    settled.append((row.id, "sending", _outcome_of(send, subject, now, result, row)))
                    unanswered = unanswered + 1 if result.unknown > before else 0
                    alerts.note(row, settled[-1][2])
        finally:  # what is settled is written; a row whose send was interrupted stays `sending` (cut off mid-send)
            if client is not None:
                client.close()
            _settle(connection, settled, alerts.rows)
            connection.commit()
    if result.retryable:
        raise RetryableDelivery(f"{result.retryable} message(s) could not be delivered yet: {_failed_calls(result.errors)}", result)
    return result


def _failed_calls(errors: list[str]) -> str:
    """How many calls failed and why, each reason once (`SES unreachable: ... (40 calls)`), the commonest first."""
    reasons = Counter(re.sub(r"^outbox \d+ to [^:]*: ", "", error) for error in errors)
    shown = "; ".join(f"{why} ({n} call{'s' if n > 1 else ''})" for why, n in reasons.most_common(3))
    more = len(reasons) - 3
    return f"{len(errors)} call(s) failed: {shown}" + (f"; and {more} other reason(s)" if more > 0 else "")


UNANSWERED_IN_A_ROW = 3  # a hanging transport costs its timeout per message: after this many, the rest waits


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _outcome_of(send, subject: str, now: datetime, result: DeliveryResult, row) -> dict[str, Any]:
    """Hand one message to its transport; the values its outbox row takes from what happened."""
    try:
        message_id = send()
    except OutcomeUnknown as exc:
        result.unknown += 1
        result.errors.append(f"outbox {row.id} to {row.to_address}: outcome unknown: {exc}")
        return {"status": "unknown", "error": f"outcome unknown (it may have left; not resent): {exc}"}
    except DeliveryError as exc:
        result.errors.append(f"outbox {row.id} to {row.to_address}: {exc}")
        if exc.retryable:
            result.retryable += 1
            return {"status": "pending", "error": str(exc)}
        result.failed += 1
        return {"status": "failed", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a fault of this message (bad address, bad URL...), not of the batch
        result.failed += 1
        result.errors.append(f"outbox {row.id} to {row.to_address!r}: {_why(exc)}")
        return {"status": "failed", "error": _why(exc)}
    result.sent += 1
    return {"status": "sent", "subject": subject, "sent_at": now, "error": None, "message_id": message_id}


_OUTBOX = Outbox.__table__
# mark one row `sending`, only if it is still `pending` (a cancelled or already taken row is left alone)
_CLAIM = (update(_OUTBOX).where(_OUTBOX.c.id == bindparam("_id"), _OUTBOX.c.status == "pending")
          .values(status="sending", attempts=_OUTBOX.c.attempts + 1, attempted_at=bindparam("_at")))
_SETTLE: dict[tuple[str, ...], Any] = {}  # one statement per set of columns an outcome writes, built once


def _settle_statement(columns: tuple[str, ...]):
    statement = _SETTLE.get(columns)
    if statement is None:
        statement = _SETTLE[columns] = (
            update(_OUTBOX).where(_OUTBOX.c.id == bindparam("_id"), _OUTBOX.c.status == bindparam("_from"))
            .values({name: bindparam(name) for name in columns}))
    return statement


def _settle(connection, settled: list[tuple[int, str, dict[str, Any]]], alerts: dict[int, dict[str, Any]] | None = None) -> None:
    """Write the outcomes gathered so far, each only onto a row still in the status it was seen in; empties the list.
    A failure with an alert (`alerts`, by outbox id) is written alone, and its alert in the same commit if it took."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for outbox_id, expected, values in settled:
        alert = alerts.pop(outbox_id, None) if alerts else None
        params = {"_id": outbox_id, "_from": expected, **values}
        if alert is None:
            groups[tuple(sorted(values))].append(params)
        elif connection.execute(_settle_statement(tuple(sorted(values))), params).rowcount:
            connection.execute(insert(_OUTBOX).values(alert))
    for columns, params in groups.items():
        connection.execute(_settle_statement(columns), params[0] if len(params) == 1 else params)  # executemany costs more for one
    settled.clear()


class _Alerts:
    """The alerts one delivery writes: staff mail that failed for good tells the manager (scoring.yaml `sales.manager`),
    read only when the first such failure happens."""

    def __init__(self, settings: Settings, now: datetime, result: DeliveryResult) -> None:
        self.settings, self.now, self.result = settings, now, result
        self.rows: dict[int, dict[str, Any]] = {}  # failed outbox id -> the alert row to write with its failure
        self._manager: str | None | bool = False  # False: not read yet

    def note(self, row, values: dict[str, Any]) -> None:
        if values.get("status") != "failed" or not is_staff_mail(row.options) or row.options.get("alert_for"):
            return
        alert = alert_for(row, manager=self.manager(), why=values.get("error") or "", now=self.now)
        if alert is None:
            self.result.errors.append(f"outbox {row.id} to {row.to_address} failed and nobody was alerted: "
                                      "set sales.manager in scoring.yaml to be told")
        else:
            self.rows[row.id] = alert

    def manager(self) -> str | None:
        if self._manager is False:
            try:
                from relance.library import read_scoring

                manager = read_scoring(self.settings.scenarios_dir)[0].sales.manager
            except Exception as exc:  # noqa: BLE001 - a broken scoring.yaml must not stop the sending
                self.result.errors.append(f"scoring.yaml could not be read for sales.manager: {_why(exc)}")
                manager = None
            self._manager = manager if manager and "@" in manager else None
        return self._manager


PENDING_MAX_AGE = timedelta(hours=48)  # the SLA deadline: later than that, a message to a lead has lost its point


def expire_pending(engine: Engine, *, now: datetime) -> int:
    """Fail the messages to leads and the webhooks still pending PENDING_MAX_AGE after they were written (or put
    back by an operator); how many. Staff mail never expires: it is retried until it leaves or fails for good."""
    cutoff, hours = now - PENDING_MAX_AGE, f"{PENDING_MAX_AGE.total_seconds() / 3600:g} h"
    with Session(engine) as session:
        old = session.execute(select(Outbox.id, Outbox.options).where(Outbox.status == "pending", Outbox.created_at < cutoff)).all()
        written, put_back = [], []
        for row in old:
            if not is_staff_mail(row.options) and not requeued_since(row.options, cutoff):
                (put_back if (row.options or {}).get(REQUEUED) else written).append(row.id)
        expired = 0
        for error, ids in ((f"expired: still pending {hours} after it was written", written),
                           (f"expired: still pending {hours} after an operator put it back", put_back)):
            for start in range(0, len(ids), 500):
                expired += session.execute(update(Outbox).where(Outbox.id.in_(ids[start:start + 500]), Outbox.status == "pending")
                                           .values(status="failed", error=error)).rowcount
        session.commit()
    return expired


def deliver_pending(
    engine: Engine, settings: Settings, *, now: datetime, transport: Transport | None = None,
    templates: TemplateLibrary | None = None, batch_size: int | None = None,
) -> DeliveryResult:
    """Deliver every outbox row still pending from before `now`: a batch whose retries ran out, a crash
    between writing and sending, a hand-off or SLA email written by ingestion or housekeeping.
    Messages to leads pending for longer than PENDING_MAX_AGE expire (failed, with the reason) instead of leaving
    late (staff mail does not: see expire_pending); rows an earlier run left `sending` (it died mid-send) become `unknown` and are named in `cut_off`."""
    transport = transport or make_transport(settings)
    templates = templates or TemplateLibrary(settings.templates_dir)
    total = DeliveryResult(cut_off=mark_cut_off(engine, now=now))
    total.failed += expire_pending(engine, now=now)
    last_id = 0
    while True:
        with Session(engine) as session:
            ids = list(session.execute(
                select(Outbox.id).where(Outbox.status == "pending", Outbox.created_at <= now, Outbox.id > last_id)
                .order_by(Outbox.id).limit(batch_size or settings.batch_size)
            ).scalars())
        if not ids:
            return total
        last_id = ids[-1]
        try:
            done = deliver(engine, settings, outbox_ids=ids, now=now, transport=transport, templates=templates)
        except RetryableDelivery as exc:  # left pending: the next run tries again
            done = exc.result or DeliveryResult()
        total.merge(done)


# --------------------------------------------------------------------------- the whole tick


@dataclass
class TickReport:
    """What one tick of one scenario did, and where its leads stand after it (see docs/ticks.md for each figure)."""

    scenario: str
    entered: int = 0  # enrollments whose first step this tick ran: segment entries now, other doors since the last tick
    advanced: int = 0  # "due": enrollments this tick claimed and advanced
    batches: int = 0
    sent: int = 0  # messages this tick's steps wrote that left in its batches
    skipped: int = 0
    failed: int = 0
    unknown: int = 0  # handed over with no answer this tick: may have left, never resent by itself
    leftovers: int = 0  # other pending messages this tick sent: hand-off and SLA emails, what earlier runs left
    cut_off: int = 0  # messages an earlier run left `sending` (it died mid-send), now `unknown`
    enrollments_failed: int = 0  # enrollments that left on an error of their own (the others went on)
    waiting: int | None = None  # active enrollments of the scenario in a wait after the tick (the enrollments table)
    counts: Counter = field(default_factory=Counter)  # this tick's step-log outcomes: (step_id, outcome) -> n
    standing: dict[str, tuple[int, int]] = field(default_factory=dict)  # step -> (active here, of which waiting), after

    def add(self, batch: BatchResult, delivery: DeliveryResult) -> None:
        self.batches += 1
        self.advanced += batch.advanced
        self.enrollments_failed += len(batch.failed)
        self.counts.update(batch.counts)
        self.sent += delivery.sent
        self.skipped += delivery.skipped
        self.failed += delivery.failed
        self.unknown += delivery.unknown

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "entered": self.entered, "advanced": self.advanced, "batches": self.batches,
            "sent": self.sent, "skipped": self.skipped, "failed": self.failed, "unknown": self.unknown,
            "leftovers": self.leftovers, "cut_off": self.cut_off, "enrollments_failed": self.enrollments_failed,
            "waiting": self.waiting,
        }


def step_log_mark(engine: Engine) -> int:
    """The newest step-log row when a tick starts: every row the tick writes comes after it."""
    with engine.connect() as connection:
        return connection.execute(select(func.coalesce(func.max(StepLog.id), 0))).scalar_one()


def count_tick(engine: Engine, report: TickReport, *, now: datetime, mark: int, standing: bool = True) -> TickReport:
    """Fill in the figures read from the database once the tick's work is done: `entered` (enrollments whose
    first step ran in this tick: a step-log row of this tick, none before it) and, with `standing`, where the
    scenario's leads stand now (`waiting`, per step: this reads every active enrollment of the scenario)."""
    from relance.report import standing as where_now

    log, earlier = StepLog.__table__, StepLog.__table__.alias("earlier")
    first_steps = (
        select(func.count(func.distinct(log.c.enrollment_id)))
        .where(log.c.id > mark, log.c.scenario == report.scenario, log.c.kind != "enter", log.c.at == now,
               ~select(earlier.c.id).where(earlier.c.enrollment_id == log.c.enrollment_id, earlier.c.id <= mark,
                                           earlier.c.kind != "enter").exists())
    )
    with Session(engine) as session:
        report.entered = session.execute(first_steps).scalar_one()
        if standing:
            report.standing = {step: here for (_, step), here in where_now(session, report.scenario).items()}
            report.waiting = sum(waiting for _, waiting in report.standing.values())
    return report


def run_tick_inline(
    engine: Engine, settings: Settings, *, scenario: str, now: datetime, library: Library | None = None,
    transport: Transport | None = None, templates: TemplateLibrary | None = None, batch_size: int | None = None,
    standing: bool = True,
) -> TickReport:
    """The sequence `flows/tick.py` runs, without Prefect: for tests, benchmarks and the simulator's checks.
    `standing=False` skips counting where every enrollment stands (`waiting` stays None): the benchmarks
    measure the work that grows with what is due, not that count, which grows with what is enrolled."""
    library = library or load_library(settings)
    transport = transport or make_transport(settings)
    templates = templates or TemplateLibrary(settings.templates_dir)
    mark = step_log_mark(engine)
    sync_scenarios(engine, settings, now=now, library=library)
    report = TickReport(scenario=scenario)
    enroll_due(engine, settings, scenario=scenario, now=now, library=library)
    while (batch := advance_due(engine, settings, scenario=scenario, now=now, limit=batch_size, library=library)).advanced:
        report.add(batch, deliver(engine, settings, outbox_ids=batch.outbox_ids, now=now, transport=transport, templates=templates))
    leftovers = deliver_pending(engine, settings, now=now, transport=transport, templates=templates)
    report.leftovers, report.cut_off = leftovers.sent, len(leftovers.cut_off)
    return count_tick(engine, report, now=now, mark=mark, standing=standing)
