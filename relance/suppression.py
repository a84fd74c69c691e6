"""Suppression: addresses relance never mails again, whatever door the request came through.

Every source (one-click link, `relance event`, `POST /events`, SES bounces and complaints,
`relance suppress import` and `add`) goes through `suppress`: the address joins the suppression list
(the first reason is kept), its lead is flagged, and the lead's marketing emails still waiting in the
outbox are cancelled before they leave. Emails already handed to the transport cannot be recalled.
An address may be on the list before it is a lead: the lead it later becomes comes in suppressed
(`honour_list`, `suppressed_among`). Every door looks an address up by its hash (`address_hash`): a forgotten person's
entry keeps only that (relance.privacy).

Preferences: on the unsubscribe page a lead may choose less than everything (`set_preference`): only the newsletter
(scope `except_newsletter`: every marketing email stops but those of scenarios that say `newsletter: true`), or a pause
of three months (scope `all` with an end, `until`: mailed again from then on). Such an entry is on the list with the
reason `preference` but does not flag the lead (`lead.suppressed` stays for the permanent suppression); delivery asks
`held_by_preferences` at send time, so every scenario is held to it, and staff mail, webhooks and transactional email
still go. A later permanent suppression (the page's "everything", a bounce, `lead forget`) replaces the preference.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import and_, not_, or_, select, update
from sqlmodel import Session

from relance.store.repo import insert_ignoring_conflicts, normalise_email
from relance.store.tables import Lead, Outbox, ScenarioVersion, Suppression

# events that take an address off the list of people relance may mail, and the reason recorded
SUPPRESSING_EVENTS = {"unsubscribed": "unsubscribed", "email_complained": "complained", "email_bounced": "bounced"}
# every reason an address may be on the list for: the events' ones, a list imported, an operator's decision
REASONS = ("unsubscribed", "bounced", "complained", "imported", "manual")
FORGOTTEN = "forgotten"  # the reason of a person erased by `relance lead forget` who was not on the list before
HASHED = "sha256:"  # how a forgotten person's entry spells its address: the hash alone
ALL, EXCEPT_NEWSLETTER = "all", "except_newsletter"  # what an entry stops: every marketing email, or all but the newsletter
SCOPES = (ALL, EXCEPT_NEWSLETTER)
PREFERENCE = "preference"  # the reason of an entry a lead chose on the unsubscribe page (a scope, an end)
PAUSE = timedelta(days=90)  # the page's "pause 3 months"


def _permanent(table=Suppression.__table__):
    """The SQL test of an entry that is the permanent suppression: every email, for good."""
    return and_(table.c.scope == ALL, table.c.until.is_(None))


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
    if not new:  # a preference the lead chose gives way to the permanent suppression, with this reason
        new = bool(session.execute(update(Suppression.__table__).where(
            Suppression.__table__.c.email_hash == address_hash(email), not_(_permanent()))
            .values(scope=ALL, until=None, reason=reason, source=source[:200], at=now)).rowcount)
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
    rows = session.execute(select(Suppression.email_hash, Suppression.reason)
                           .where(Suppression.email_hash.in_(wanted), _permanent())).all()  # a preference flags no lead
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
    """The address's entry on the list (reason, source, when, scope, until), or None."""
    row = session.execute(select(Suppression.reason, Suppression.source, Suppression.at, Suppression.scope, Suppression.until)
                          .where(Suppression.email_hash == address_hash(email))).first()
    return None if row is None else {"reason": row.reason, "source": row.source, "at": row.at, "scope": row.scope,
                                     "until": row.until}


def list_entries(session: Session) -> list[dict[str, Any]]:
    """The whole list, oldest first, each entry saying whether the address is a lead."""
    rows = session.execute(
        select(Suppression.email, Suppression.reason, Suppression.source, Suppression.at, Suppression.scope,
               Suppression.until, Lead.id.is_not(None).label("lead"))
        .outerjoin(Lead, Lead.email == Suppression.email).order_by(Suppression.at, Suppression.email)
    ).all()
    return [{"email": r.email, "reason": r.reason, "source": r.source, "at": r.at, "scope": r.scope, "until": r.until,
             "lead": bool(r.lead)} for r in rows]


def scope_words(scope: str, until: datetime | None, *, now: datetime | None = None) -> str:
    """An entry's scope and end as `lead show` and `suppress list` say them: "everything", "all but the newsletter",
    "everything until 2027-03-01" ("... (ended)" once `now` is past it)."""
    words = "everything" if scope == ALL else "all but the newsletter"
    if until is None:
        return words
    return f"{words} until {until:%Y-%m-%d}" + (" (ended)" if now is not None and until <= now else "")


# --- preferences: chosen on the unsubscribe page, honoured at send time ---------------------------------------------


def set_preference(session: Session, *, email: str, scope: str, until: datetime | None, source: str, now: datetime) -> bool:
    """Record a lead's preference (a `scope` of SCOPES, an end or None); True if it now holds, False when the address
    is suppressed for good already (nothing is less than that). A new choice replaces an earlier one. The caller commits."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r}: expected one of {', '.join(SCOPES)}")
    email, table = normalise_email(email), Suppression.__table__
    values = dict(reason=PREFERENCE, source=source[:200], at=now, scope=scope, until=until)
    statement = insert_ignoring_conflicts(session, table, ["email_hash"])
    if session.execute(statement.returning(table.c.email), [dict(email=email, email_hash=address_hash(email), **values)]).first():
        return True
    return bool(session.execute(update(table).where(table.c.email_hash == address_hash(email), not_(_permanent()))
                                .values(**values)).rowcount)


@dataclass(frozen=True)
class Preference:
    """A preference in force: what it stops, until when (None: until the lead changes it)."""

    scope: str
    until: datetime | None

    def why(self) -> str:
        """The reason an email it holds back is skipped with."""
        if self.scope == ALL:
            return f"paused until {self.until:%Y-%m-%d} (unsubscribe page)" if self.until else "suppressed (unsubscribe page)"
        return "only the newsletter" + (f" until {self.until:%Y-%m-%d}" if self.until else "") + " (unsubscribe page)"


def preferences_of(session_or_connection, emails: Iterable[str], *, now: datetime) -> dict[str, Preference]:
    """The preferences in force at `now` of these addresses (by hash), by address; one query."""
    wanted = {address_hash(e): e for e in emails}
    if not wanted:
        return {}
    table = Suppression.__table__
    rows = session_or_connection.execute(select(table.c.email_hash, table.c.scope, table.c.until).where(
        table.c.email_hash.in_(wanted), not_(_permanent(table)), or_(table.c.until.is_(None), table.c.until > now))).all()
    return {wanted[r.email_hash]: Preference(r.scope, r.until) for r in rows}


def newsletter_scenarios(session_or_connection, names: Iterable[str]) -> set[str]:
    """Those of these scenarios whose newest registered version says `newsletter: true`."""
    names = set(names)
    if not names:
        return set()
    newest: dict[str, bool] = {}
    for name, definition in session_or_connection.execute(select(ScenarioVersion.scenario, ScenarioVersion.definition)
                                                          .where(ScenarioVersion.scenario.in_(names)).order_by(ScenarioVersion.id)):
        newest[name] = (definition or {}).get("newsletter") is True
    return {name for name, newsletter in newest.items() if newsletter}


def held_by_preferences(connection, *, rows: Sequence[Any], leads: Mapping[int, Any], now: datetime) -> dict[int, str]:
    """Of these outbox rows about to be sent (id, lead_id, kind, scenario), those a lead's preference holds back, with
    why: a lead's marketing email (kind `lead`, not transactional) while a preference is in force, unless the scope is
    `except_newsletter` and its scenario is a newsletter. One query when no lead of the batch has a preference."""
    emails = {lead.email: lead_id for lead_id, lead in leads.items() if not lead.suppressed}
    chosen = {emails[email]: preference for email, preference in preferences_of(connection, emails, now=now).items()}
    mine = [row for row in rows if row.kind == "lead" and row.lead_id in chosen]
    if not mine:
        return {}
    outbox = Outbox.__table__
    marketing = dict(connection.execute(select(outbox.c.id, outbox.c.marketing).where(outbox.c.id.in_([r.id for r in mine]))).all())
    newsletters = newsletter_scenarios(connection, {r.scenario for r in mine if chosen[r.lead_id].scope == EXCEPT_NEWSLETTER})
    held = {}
    for row in mine:
        preference = chosen[row.lead_id]
        if not marketing.get(row.id, True) or (preference.scope == EXCEPT_NEWSLETTER and row.scenario in newsletters):
            continue
        held[row.id] = preference.why()
    return held
