"""Suppression: addresses relance never mails again, whatever door the request came through.

Every source (one-click link, `relance event`, `POST /events`, SES bounces and complaints,
`relance suppress import` and `add`) goes through `suppress`: the address joins the suppression list
(the first reason is kept), its lead is flagged, and the lead's marketing emails still waiting in the
outbox are cancelled before they leave. Emails already handed to the transport cannot be recalled.
An address may be on the list before it is a lead: the lead it later becomes comes in suppressed
(`honour_list`, `suppressed_among`). Every door looks an address up by its hash (`address_hash`): a forgotten person's
entry keeps only that (relance.privacy).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import select, update
from sqlmodel import Session

from relance.store.repo import insert_ignoring_conflicts, normalise_email
from relance.store.tables import Lead, Outbox, Suppression

# events that take an address off the list of people relance may mail, and the reason recorded
SUPPRESSING_EVENTS = {"unsubscribed": "unsubscribed", "email_complained": "complained", "email_bounced": "bounced"}
# every reason an address may be on the list for: the events' ones, a list imported, an operator's decision
REASONS = ("unsubscribed", "bounced", "complained", "imported", "manual")
FORGOTTEN = "forgotten"  # the reason of a person erased by `relance lead forget` who was not on the list before
HASHED = "sha256:"  # how a forgotten person's entry spells its address: the hash alone


def address_hash(email: str) -> str:
    """The sha256 (hex) of the normalised address, without a key: it must recognise the address after a key rotation."""
    return hashlib.sha256(normalise_email(email).encode()).hexdigest()


def reason_of_event(event_type: str, properties: dict[str, Any]) -> str | None:
    """The suppression reason an event carries, if any (a transient bounce carries none)."""
    if event_type == "email_bounced" and str(properties.get("bounce_type", "permanent")).lower() == "transient":
        return None
    return SUPPRESSING_EVENTS.get(event_type)


def suppress_for_event(session: Session, *, email: str, event_type: str, properties: dict[str, Any], channel: str,
                       now: datetime) -> bool:
    """`suppress` an address an event names (the lead's own, or another recipient SES lists), with the event's reason
    and the source `<channel>:<event type>`; False when the event suppresses nothing (a transient bounce)."""
    reason = reason_of_event(event_type, properties)
    if reason is None:
        return False
    return suppress(session, email=email, reason=reason, source=f"{channel}:{event_type}", now=now)


def suppress(session: Session, *, email: str, reason: str, source: str, now: datetime) -> bool:
    """Never mail this address again; True if it was not suppressed before. The caller commits."""
    email = normalise_email(email)
    statement = insert_ignoring_conflicts(session, Suppression.__table__, ["email_hash"])
    new = session.execute(statement.returning(Suppression.__table__.c.email),
                          [dict(email=email, email_hash=address_hash(email), reason=reason, source=source[:200], at=now)]
                          ).first() is not None
    lead = session.exec(select(Lead).where(Lead.email == email)).scalars().first()
    if lead is None:
        return new
    if lead.suppressed is None:
        lead.suppressed, lead.updated_at = reason, now
        new = True
    cancel_pending(session, lead_id=lead.id, reason=lead.suppressed)
    return new


def cancel_pending(session: Session, *, lead_id: int, reason: str) -> int:
    """Cancel the lead's marketing emails not yet handed to the transport (internal and webhook ones still go)."""
    ids = list(session.execute(select(Outbox.id).where(
        Outbox.lead_id == lead_id, Outbox.status == "pending", Outbox.kind == "lead")).scalars())
    if ids:
        session.execute(update(Outbox).where(Outbox.id.in_(ids), Outbox.status == "pending")
                        .values(status="skipped", error=f"suppressed: {reason}"))
    return len(ids)


def suppressed_among(session: Session, emails: Iterable[str]) -> dict[str, str]:
    """The addresses of `emails` on the suppression list (forgotten ones too: by hash), with their reason."""
    wanted = {address_hash(e): normalise_email(e) for e in emails}
    if not wanted:
        return {}
    rows = session.execute(select(Suppression.email_hash, Suppression.reason).where(Suppression.email_hash.in_(wanted))).all()
    return {wanted[digest]: reason for digest, reason in rows}


def honour_list(session: Session, lead: Lead) -> str | None:
    """Flag a lead whose address is on the list (one just created, typically); returns its reason, if any."""
    if lead.suppressed is None:
        lead.suppressed = suppressed_among(session, [lead.email]).get(lead.email)
    return lead.suppressed


def honour_list_of(session: Session, emails: Iterable[str]) -> int:
    """The leads of these addresses that are on the list take its reason (leads just written in bulk); how many.

    The list read by hash in one query, then one UPDATE per reason: no object is loaded (use `honour_list` for one in
    the session)."""
    lead = Lead.__table__
    by_reason: dict[str, set[str]] = {}
    for email, reason in suppressed_among(session, emails).items():
        by_reason.setdefault(reason, set()).add(email)
    return sum(session.execute(update(lead).where(lead.c.email.in_(listed), lead.c.suppressed.is_(None))
                               .values(suppressed=reason)).rowcount or 0 for reason, listed in by_reason.items())


@dataclass(frozen=True)
class ListOutcome:
    """What suppressing a list of addresses did."""

    suppressed: int = 0  # newly suppressed (new on the list, or a lead newly flagged)
    already: int = 0  # on the list, and their lead flagged, before


def suppress_all(session: Session, entries: Iterable[tuple[str, str]], *, source: str, now: datetime) -> ListOutcome:
    """`suppress` each (email, reason) of a list, in one transaction (the caller commits)."""
    new = already = 0
    for email, reason in entries:
        if suppress(session, email=email, reason=reason, source=source, now=now):
            new += 1
        else:
            already += 1
    return ListOutcome(suppressed=new, already=already)


def entry_of(session: Session, email: str) -> dict[str, Any] | None:
    """The address's entry on the list (reason, source, when), or None."""
    row = session.execute(select(Suppression.reason, Suppression.source, Suppression.at)
                          .where(Suppression.email_hash == address_hash(email))).first()
    return None if row is None else {"reason": row.reason, "source": row.source, "at": row.at}


def list_entries(session: Session) -> list[dict[str, Any]]:
    """The whole list, oldest first, each entry saying whether the address is a lead."""
    rows = session.execute(
        select(Suppression.email, Suppression.reason, Suppression.source, Suppression.at, Lead.id.is_not(None).label("lead"))
        .outerjoin(Lead, Lead.email == Suppression.email).order_by(Suppression.at, Suppression.email)
    ).all()
    return [{"email": r.email, "reason": r.reason, "source": r.source, "at": r.at, "lead": bool(r.lead)} for r in rows]
