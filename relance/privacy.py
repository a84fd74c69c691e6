"""A person's rights over their data: everything held about them (`export`), and erasure (`forget`).

Forgetting keeps every row a report counts (the lead, its events, emails, step logs, hand-offs, deals, score and stage
rows), anonymised: the profile and consent are blanked, the address becomes `forgotten-<id>@forgotten.invalid`, notes
are emptied, and every text left that names the person (their address, names, company, the values of their fields,
the notes) is cut out of event properties, outbox rows, step logs and ledgers. What stays of the address is its hash
on the suppression list (relance.suppression): a form, an import or a send recognises it and never mails it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import select, update
from sqlmodel import Session

from relance.consent import basis_of, consent_of
from relance.store.repo import find_lead, normalise_email
from relance.store.tables import (Deal, Enrollment, Event, Handoff, Lead, Outbox, ScoreChange, StageChange, StepLog,
                                  Suppression, profile_of)
from relance.suppression import FORGOTTEN, HASHED, address_hash, cancel_pending, entry_of, suppress

ERASED = "[erased]"
# properties that are the person's whatever their value (a form's fields, a click's browser, the consent record)
PERSONAL_KEYS = frozenset({"email", "first_name", "last_name", "name", "full_name", "phone", "mobile", "company",
                           "job_title", "address", "ip", "user_agent", "note", "notes", "message", "comment", "bant"})
_SHORTEST = 3  # a shorter value ("fr", "M.") names nobody and would cut words out of every text


@dataclass(frozen=True)
class Forgotten:
    """What `forget` did: the lead's id (None when none was left to erase) and whether it had been forgotten before."""

    lead_id: int | None
    already: bool = False


def forget(session: Session, *, email: str, now: datetime) -> Forgotten | None:
    """Erase the person with this address everywhere, keeping the rows reports count and the address's hash on the
    suppression list; None when relance never knew the address (forgotten before: `already`). The caller commits."""
    email = normalise_email(email)
    lead = find_lead(session, email)
    if lead is None:
        listed = session.execute(select(Suppression.email).where(Suppression.email_hash == address_hash(email))).scalar()
        return Forgotten(None, already=True) if listed is not None and listed.startswith(HASHED) else None
    handoffs = list(session.execute(select(Handoff).where(Handoff.lead_id == lead.id)).scalars())
    deals = list(session.execute(select(Deal).where(Deal.lead_id == lead.id)).scalars())
    personal = _personal_strings(lead, handoffs, deals)
    suppress(session, email=email, reason=FORGOTTEN, source="forget", now=now)
    session.execute(update(Suppression).where(Suppression.email_hash == address_hash(email))
                    .values(email=HASHED + address_hash(email), source="forget"))
    reason = lead.suppressed or FORGOTTEN
    alias = f"forgotten-{lead.id}@forgotten.invalid"
    for name in ("first_name", "last_name", "job_title", "company", "sector"):
        setattr(lead, name, "")
    lead.email, lead.company_revenue, lead.fields, lead.suppressed, lead.updated_at = alias, None, {}, reason, now
    lead.tags = _scrub(list(lead.tags or []), personal)
    cancel_pending(session, lead_id=lead.id, reason=reason)
    for event in session.execute(select(Event).where(Event.lead_id == lead.id)).scalars():
        event.properties = _scrub(_without_personal_keys(event.properties), personal)
        event.idempotency_key = f"forgotten:{event.id}"  # a key may be derived from (or spell) the address
    for row in session.execute(select(Outbox).where(Outbox.lead_id == lead.id)).scalars():
        row.to_address = alias if row.kind == "lead" else row.to_address
        row.subject, row.error = _scrub(row.subject, personal), _scrub(row.error, personal)
        row.options = _scrub(_without_personal_keys(row.options), personal)
        row.message_id = _scrub(row.message_id, personal)
    for log in session.execute(select(StepLog).where(StepLog.lead_id == lead.id)).scalars():
        log.detail = _scrub(_without_personal_keys(log.detail), personal)
    for enrollment in session.execute(select(Enrollment).where(Enrollment.lead_id == lead.id)).scalars():
        enrollment.state = _scrub(enrollment.state, personal)
        enrollment.waiting = _scrub(enrollment.waiting, personal)
        enrollment.exit_reason = _scrub(enrollment.exit_reason, personal)
    for change in session.execute(select(ScoreChange).where(ScoreChange.lead_id == lead.id)).scalars():
        change.detail = _scrub(change.detail, personal)
    for move in session.execute(select(StageChange).where(StageChange.lead_id == lead.id)).scalars():
        move.reason, move.by = _scrub(move.reason, personal), _scrub(move.by, personal)
    for handoff in handoffs:
        handoff.note, handoff.bant, handoff.source = "", {}, _scrub(handoff.source, personal)
        handoff.reason = _scrub(handoff.reason, personal)
    for deal in deals:
        deal.note = ""
    session.flush()
    return Forgotten(lead.id)


def export(session: Session, *, email: str) -> dict[str, Any] | None:
    """Everything relance holds about the person with this address, as plain data; None if it holds nothing."""
    lead = find_lead(session, email)
    if lead is None:
        return None

    def rows(table, *order) -> list[Any]:
        return list(session.execute(select(table).where(table.lead_id == lead.id).order_by(*order, table.id)).scalars())

    def plain(row, drop: Iterable[str] = ("lead_id",)) -> dict[str, Any]:
        return {k: v for k, v in row.model_dump().items() if k not in drop}

    return {
        "profile": {**profile_of(lead), **{k: getattr(lead, k) for k in ("stage", "score", "fit", "grade", "fields", "tags",
                                                                         "created_at", "updated_at")}},
        "consent": consent_of(lead.fields),
        "basis": basis_of(lead.fields),
        "suppression": {"suppressed": lead.suppressed, "list": entry_of(session, lead.email)},
        "events": [plain(e) for e in rows(Event, Event.occurred_at)],
        "emails": [plain(o) for o in rows(Outbox, Outbox.created_at)],
        "enrollments": [plain(e) for e in rows(Enrollment, Enrollment.entered_at)],
        "steps": [plain(s) for s in rows(StepLog, StepLog.at)],
        "score_history": [plain(c) for c in rows(ScoreChange, ScoreChange.at)],
        "stage_history": [plain(c) for c in rows(StageChange, StageChange.at)],
        "handoffs": [plain(h) for h in rows(Handoff, Handoff.opened_at)],
        "deals": [plain(d) for d in rows(Deal, Deal.closed_at)],
    }


def _personal_strings(lead: Lead, handoffs: list[Handoff], deals: list[Deal]) -> list[str]:
    """Every text that names the person, longest first (so a name inside an address goes with the address)."""
    found = {lead.email, lead.email.split("@")[0], lead.first_name, lead.last_name, lead.company, lead.job_title,
             f"{lead.first_name} {lead.last_name}"}
    found.update(_texts(lead.fields))
    for handoff in handoffs:
        found.update([handoff.note, *_texts(handoff.bant)])
    found.update(deal.note for deal in deals)
    return sorted({s.strip() for s in found if s and len(s.strip()) >= _SHORTEST}, key=len, reverse=True)


def _texts(value: Any) -> list[str]:
    """The texts inside a JSON document."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _texts(v)]
    return []


def _without_personal_keys(document: Any) -> Any:
    """The document without the properties that are the person's (PERSONAL_KEYS, `consent_*`), at any depth."""
    if isinstance(document, dict):
        return {k: _without_personal_keys(v) for k, v in document.items()
                if k.lower() not in PERSONAL_KEYS and not k.lower().startswith("consent")}
    if isinstance(document, list):
        return [_without_personal_keys(v) for v in document]
    return document


def _scrub(value: Any, personal: list[str]) -> Any:
    """The value with every personal text in it (any case) replaced by `[erased]`, at any depth of a document."""
    if isinstance(value, str):
        lowered = value.lower()
        for text in personal:
            start = lowered.find(text.lower())
            while start >= 0:
                value = value[:start] + ERASED + value[start + len(text):]
                lowered = value.lower()
                start = lowered.find(text.lower(), start + len(ERASED))
        return value
    if isinstance(value, dict):
        return {_scrub(k, personal): _scrub(v, personal) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, personal) for v in value]
    return value
