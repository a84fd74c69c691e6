"""Events in: store each once, start the scenarios it triggers, wake the enrollments awaiting it or the lead's new state."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from sqlalchemy import select
from sqlmodel import Session

from relance.clock import ensure_utc
from relance.consent import BadConsent, interest_of_event, merged, record_of, with_interest
from relance.engagement import ENGAGEMENT, MACHINE_CLICK_SECONDS, Engagement
from relance.engine.triggers import event_triggers
from relance.engine.types import EventFact
from relance.enrollment import enroll_leads, event_fact
from relance.inputs import BadInput, checked_event, checked_instant, checked_profile
from relance.plans import current_version_ids, plan_for_version
from relance.workspace import Workspace
from relance.sales import (HANDOFF_STAGES, open_handoff, hot_again, last_rejections, ready_for_sales, sales_ready_since,
                           withdraw)
from relance.scenario.model import EventTrigger
from relance.scoring.config import ScoringConfig
from relance.scoring.ledger import ScoreLedger, move_stage, reach_mql
from relance.scoring.rules import behaviour_points, fit_points, grade_of
from relance.store.repo import record_events, upsert_lead
from relance.store.tables import Handoff, Lead
from relance.suppression import SUPPRESSING_EVENTS, honour_list, reason_of_event, suppress, suppress_for_event
from relance.wakes import due_now, lock_active_enrollments, wake, wake_for_lead_changes

CREATES_LEADS = frozenset({"form_submitted"})  # other events must name a known lead


class UnknownLead(LookupError):
    """An event names a lead relance has never seen."""


class BadEvent(ValueError):
    """An event that cannot come in: `index` (in the batch), `email` and `field` say which; `loc` is where the field
    is in the event (`("email",)`, `("properties", "country")`)."""

    def __init__(self, message: str, *, index: int, email: str, field: str, loc: tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.index, self.email, self.field = index, email, field
        self.loc = loc or ("properties", field)


@dataclass(frozen=True)
class IncomingEvent:
    type: str
    email: str
    occurred_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None

    def key(self) -> str:
        """The given idempotency key, else one derived from the content (a replay is the same event)."""
        if self.idempotency_key:
            return self.idempotency_key
        body = json.dumps(
            [self.type, self.email.strip().lower(), ensure_utc(self.occurred_at).isoformat(), self.properties],
            sort_keys=True, default=str,
        )
        return "auto:" + hashlib.sha256(body.encode()).hexdigest()[:32]


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    enrolled: int = 0
    woken: int = 0
    suppressed: int = 0  # addresses this batch newly put on the suppression list (or newly flagged)
    due: dict[str, int] = field(default_factory=dict)  # enrollments of the batch's leads due now, by scenario


def ingest_events(
    session: Session, *, workspace: Workspace, events: Sequence[IncomingEvent], now: datetime, channel: str = "event",
    machine_click_seconds: float = MACHINE_CLICK_SECONDS,
) -> IngestResult:
    """Store a batch of events in the caller's transaction (it commits); replays are counted, not stored again.

    Set-based where it can be: the batch's leads are read in one query, its events written in one
    INSERT .. ON CONFLICT DO NOTHING, the enrollments they may wake read in one query; then each
    new event, in order, is scored, starts the scenarios it triggers and wakes its waits.
    `channel` says where the batch came from (api, cli, link, ses...), for the suppression list; a click at most
    `machine_click_seconds` (RELANCE_MACHINE_CLICK_SECONDS) after its email left is a machine's (relance.engagement)."""
    result = IngestResult()
    for index, incoming in enumerate(events):  # refused before anything is stored
        check_event(incoming, now, index=index)
    with session.no_autoflush:
        versions = current_version_ids(session)
        triggers = event_triggered(session, workspace, versions)
        emails = {incoming.email.strip().lower() for incoming in events}
        leads = {lead.email: lead for lead in session.exec(select(Lead).where(Lead.email.in_(emails))).scalars()}
        rows: list[dict[str, Any]] = []
        consents: list[dict[str, Any] | None] = []  # each event's consent record, read before anything is written
        interests: list[dict[str, Any] | None] = []  # and the legitimate interest it records (relance.consent)
        for index, incoming in enumerate(events):
            email = incoming.email.strip().lower()
            lead = leads.get(email)
            if lead is None:
                if incoming.type not in CREATES_LEADS:
                    raise UnknownLead(f"no lead with email {email!r}: import it or send a form_submitted event first")
                profile = checked_profile(incoming.properties)  # checked before anything was stored: cannot fail now
                lead = leads[email] = upsert_lead(session, email=email, now=now, source=profile.pop("source", ""), **profile)
                honour_list(session, lead)  # an address on the suppression list becomes a lead never mailed
                grade_lead(lead, workspace.scoring)
                session.flush()
            try:
                consents.append(record_of(incoming.type, incoming.properties, occurred_at=incoming.occurred_at, channel=channel))
                interests.append(interest_of_event(incoming.type, incoming.properties, occurred_at=incoming.occurred_at, channel=channel))
            except BadConsent as exc:
                raise BadEvent(f"{incoming.type} for {email}: {exc}", index=index, email=email, field=exc.field) from None
            rows.append(dict(lead_id=lead.id, type=incoming.type, occurred_at=ensure_utc(incoming.occurred_at),
                             properties=dict(incoming.properties), idempotency_key=incoming.key(), received_at=now))
        stored = record_events(session, rows)
        waiting = lock_active_enrollments(session, {row["lead_id"] for row in rows})
        new = [row for row in rows if row["idempotency_key"] in stored]  # a replayed batch scores nothing
        lock_leads(session, {row["lead_id"] for row in new})  # one batch at a time scores a lead
        ledger = ScoreLedger(session)  # the batch's score changes, written in one INSERT below (and when read)
        engagement = Engagement(session, {row["lead_id"] for row in new if row["type"] in ENGAGEMENT},
                                window=timedelta(seconds=machine_click_seconds), ledger=ledger)
        reads = HandoffReads(session, workspace.scoring, {row["lead_id"] for row in rows})
        entering: dict[tuple[str, datetime | None], list[Lead]] = defaultdict(list)
        changed: set[int] = set()  # leads with a new event
        for incoming, row, consent, interest in zip(events, rows, consents, interests):
            event_id = stored.pop(row["idempotency_key"], None)  # popped: a key twice in the batch is stored once
            if event_id is None:
                result.duplicates += 1
                continue
            result.stored += 1
            lead = leads[incoming.email.strip().lower()]
            if consent is not None:
                ledger.write()  # a withdrawal tells sales how the score was earned: from the ledger
                result.suppressed += keep_consent(session, lead, consent, now=now, channel=channel)
            if interest is not None:
                lead.fields, lead.updated_at = with_interest(lead.fields or {}, interest), now
            event = StoredEvent(event_id, row["type"], row["occurred_at"], row["properties"])
            if (seen := engagement.classify(lead, event_id, now=now)) is not None:  # a click may be a machine's
                event = StoredEvent(event_id, seen.type, event.occurred_at, seen.properties, engagement.earns(lead.id, seen))
            if reason_of_event(event.type, event.properties) is not None:
                ledger.write()  # the withdrawn notice reads the ledger
                result.suppressed += suppress_for_event(session, email=lead.email, event_type=event.type,
                                                        properties=event.properties, channel=channel, now=now)
                withdraw(session, lead, now=now, cause=event.type)
            score_event(session, ledger=ledger, lead=lead, event=event, scoring=workspace.scoring, now=now, reads=reads)
            fact = event_fact(event)
            for name, trigger in triggers.items():
                if event_triggers(trigger, fact):
                    entering[(name, _due_of(incoming, now))].append(lead)
            result.woken += wake(waiting.get(lead.id, ()), event_type=event.type, now=now)
            changed.add(lead.id)
        ledger.write()
        # the points, MQL crossings and hand-offs of the batch may end waits on the leads' state
        result.woken += wake_for_lead_changes(session, changed, scoring=workspace.scoring, now=now)
        for (name, due_at), leads_in in sorted(entering.items(), key=lambda item: (item[0][0], item[0][1] or now)):
            result.enrolled += enroll_leads(  # one bulk enrollment per scenario (and re-engage date)
                session, plan=plan_for_version(session, versions[name]), version_id=versions[name],
                leads=leads_in, scoring=workspace.scoring, now=now, due_at=due_at,
            )
        session.flush()  # what the batch did is in the caller's transaction, for it to read or commit
        if result.enrolled or result.woken:  # their ticks may run now rather than at the next schedule
            result.due = due_now(session, changed, now=now)
    return result


def keep_consent(session: Session, lead: Lead, record: dict[str, Any], *, now: datetime, channel: str) -> int:
    """Add a consent record to the lead's history (relance.consent); a withdrawal puts the address on the
    suppression list, as an unsubscribe does. 1 if that newly suppressed it."""
    lead.fields, lead.updated_at = merged(lead.fields or {}, record), now
    if record["granted"]:
        return 0
    new = suppress(session, email=lead.email, reason="unsubscribed", source=f"{channel}:consent withdrawn", now=now)
    withdraw(session, lead, now=now, cause="unsubscribed")  # sales read why in the same words
    return int(new)


def event_triggered(session: Session, workspace: Workspace, versions: dict[str, int]) -> dict[str, EventTrigger]:
    """The event triggers of the registered scenarios, by name. A scenario whose file is broken keeps the trigger of
    its last registered version: the leads it would enroll enter that version and wait until the file is fixed."""
    plans = {name: plan for name, plan in workspace.plans.items() if name in versions}
    plans.update({name: plan_for_version(session, versions[name]) for name in workspace.waiting if name in versions})
    return {name: plan.scenario.trigger for name, plan in plans.items() if isinstance(plan.scenario.trigger, EventTrigger)}


@dataclass(frozen=True)
class StoredEvent:
    """An event just stored: what scoring and triggers read of it (`earns`: False for a replayed open or click)."""

    id: int
    type: str
    occurred_at: datetime
    properties: dict[str, Any]
    earns: bool = True


def score_event(session: Session, *, ledger: ScoreLedger, lead: Lead, event: StoredEvent, scoring: ScoringConfig,
                now: datetime, reads: HandoffReads) -> int:
    """Add the event's behaviour points to `ledger` (none for an open or a click that does not earn them:
    relance.engagement); cross the MQL line, or the hand-off point."""
    points = behaviour_points(scoring, event.type, event.properties or {}) if event.earns else 0
    ledger.add(lead, points, cause=event.type, now=now, event_id=event.id,
               scenario=(event.properties or {}).get("scenario"), step_id=(event.properties or {}).get("step_id"))
    if event.type not in SUPPRESSING_EVENTS:  # leaving is not buying: never an MQL or a hand-off
        reach_mql(session, lead, scoring, now=now)
        reach_handoff(session, lead, scoring, now=now, cause=event.type, event=event, reads=reads, ledger=ledger)
    return points


class HandoffReads:
    """What the hand-off check reads of a batch's leads, at most once per batch and lead, however many events a lead
    has: its last rejection by sales (one query for the batch) and a sales-ready action stored since (one per lead).
    Both hold for the whole batch: its events are all stored before the first is scored, and scoring them adds
    no event and no rejection."""

    def __init__(self, session: Session, scoring: ScoringConfig, lead_ids: Iterable[int]) -> None:
        self.session, self.scoring, self.lead_ids = session, scoring, set(lead_ids)
        self._rejections: dict[int, Handoff] | None = None
        self._actions: dict[int, list[EventFact]] = {}

    def rejection(self, lead_id: int) -> Handoff | None:
        if self._rejections is None:
            self._rejections = last_rejections(self.session, self.lead_ids | {lead_id})
        return self._rejections.get(lead_id)

    def actions(self, lead_id: int) -> list[EventFact]:
        """The lead's sales-ready action since its last rejection (at most one): all `ready_for_sales` looks for."""
        if lead_id not in self._actions:
            rejection = self.rejection(lead_id)
            self._actions[lead_id] = sales_ready_since(self.session, self.scoring, lead_id,
                                                       rejection.answered_at if rejection is not None else None)
        return self._actions[lead_id]


def reach_handoff(session: Session, lead: Lead, scoring: ScoringConfig, *, now: datetime, cause: str,
                  reads: HandoffReads, ledger: ScoreLedger, event=None) -> None:
    """A lead at the hand-off point (score, grade, a sales-ready action) goes to sales at once, unless it cools off
    after a rejection; a "later" lead whose `event` is a sales-ready action goes back to its owner at once. The
    owner's email explains the score from the ledger: `ledger` is written first."""
    if event is not None and lead.stage == "later":
        ledger.write()
        hot_again(session, lead, event, scoring=scoring, now=now, cause=cause)
        return
    if lead.stage not in HANDOFF_STAGES or not scoring.meets(scoring.handoff, score=lead.score, grade=lead.grade):
        return
    ready = ready_for_sales(scoring, score=lead.score, grade=lead.grade, events=reads.actions(lead.id),
                            rejection=reads.rejection(lead.id), now=now)
    if ready is True:
        ledger.write()
        open_handoff(session, lead, scoring=scoring, now=now, source=f"event:{cause}")


def lock_leads(session: Session, lead_ids: set[int]) -> None:
    """Lock these leads until the caller commits and read them again, as committed: the batch then adds its points to
    the score other batches left, and reads the opens and clicks they stored (a scanner's requests arrive together).
    PostgreSQL locks the rows, after their enrollments (relance.wakes: the order a tick takes them in); SQLite holds
    the database's write lock since the batch's events were written."""
    if not lead_ids:
        return
    session.flush()  # what this batch changed of them (a new lead, its grade) is kept
    query = select(Lead).where(Lead.id.in_(lead_ids)).order_by(Lead.id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    session.exec(query).scalars().all()


def grade_lead(lead: Lead, scoring: ScoringConfig) -> None:
    """Recompute the profile fit and grade from the lead's profile."""
    lead.fit = fit_points(scoring, lead.model_dump())
    lead.grade = grade_of(scoring, lead.fit)


def check_event(incoming: IncomingEvent, now: datetime, index: int = 0) -> None:
    """Refuse an event that cannot come in (relance.inputs: its type, email, time, key, properties, and the lead
    fields of an event that creates leads), naming the field; every door calls this before anything is stored."""
    try:
        checked_event(incoming, now=now)
        if incoming.type in CREATES_LEADS:
            checked_profile(incoming.properties)
    except BadInput as exc:
        raise BadEvent(str(exc), index=index, email=str(incoming.email), field=exc.field, loc=exc.loc) from None
    _due_of(incoming, now, index=index)


def _due_of(incoming: IncomingEvent, now: datetime, index: int = 0) -> datetime | None:
    """`said_later` fires on its re-engage date (`until`), every other trigger at once."""
    until = incoming.properties.get("until") if incoming.type == "said_later" else None
    if not until:
        return None
    try:
        return checked_instant(datetime.fromisoformat(str(until)))
    except ValueError as exc:
        problem = exc if "out of range" in str(exc) else f"must be an ISO date like 2026-09-01, got {until!r}"
        raise BadEvent(f"said_later for {incoming.email}: `until` {problem}",
                       index=index, email=incoming.email, field="until") from None
