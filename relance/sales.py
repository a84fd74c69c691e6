"""Sales hand-off: one open handoff per lead, an owner, an SLA, and the answer sales gives back.

Stages move both ways and every move is in the stage history with who and why:
lead/mql/nurturing -> sql-pending (handed off) -> sql (accepted) | nurturing (rejected) | later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, cast, func, or_, select, update
from sqlmodel import Session

from relance.engine.types import EventFact, NotReady

from relance.scoring.config import ScoringConfig
from relance.scoring.ledger import move_stage
from relance.scoring.rules import handoff_shortfall, is_sales_ready, team_for
from relance.store.repo import find_lead, record_events
from relance.store.tables import Event, Handoff, Lead, Outbox, ScoreChange, profile_of
from relance.wakes import lock_active_enrollments, wake_for_lead_changes

REJECT_REASONS = ("no-budget", "no-need", "bad-timing", "not-decision-maker", "competitor", "bad-fit", "unreachable", "other")
BANT_FIELDS = ("budget", "authority", "need", "timing")
DEFAULT_CONTACT_WITHIN, DEFAULT_TARGET = timedelta(hours=48), timedelta(hours=2)
HANDOFF_STAGES = ("lead", "mql", "nurturing")


class SalesError(ValueError):
    """An answer or a hand-off sales cannot make; the message says why and what to do."""


class NoSuchLead(SalesError):
    """The email names no lead."""


class HandoffClosed(SalesError):
    """The lead has no open handoff to answer (never handed off, or already answered)."""


class BadAnswer(SalesError):
    """The answer itself is wrong; `field` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def open_handoff_of(session: Session, lead_id: int) -> Handoff | None:
    return session.exec(select(Handoff).where(Handoff.lead_id == lead_id, Handoff.status == "open")).scalars().first()


def pick_owner(session: Session, scoring: ScoringConfig, team: str | None = None) -> str:
    """Round-robin over the team's owners (scoring.yaml `sales.teams`), else over `sales.owners`: the one after
    the last owner of that team (or of the hand-offs with no team) given a lead."""
    owners = scoring.sales.teams[team].owners if team in scoring.sales.teams else scoring.sales.owners
    if not owners:
        return scoring.sales.manager or "unassigned"
    same_team = Handoff.team == team if team in scoring.sales.teams else Handoff.team.is_(None)
    given = [_first_owner(session, h) for h in session.exec(
        select(Handoff).where(same_team).order_by(Handoff.id.desc()).limit(20)).scalars()]
    last = next((o for o in given if o in owners), None)
    return owners[(owners.index(last) + 1) % len(owners)] if last in owners else owners[0]


def _first_owner(session: Session, handoff: Handoff) -> str:
    """Whom the rotation gave this hand-off to: its owner, or the one before its first reassignment (a reassignment
    is a correction, not a turn of the rotation)."""
    for properties in session.exec(select(Event.properties).where(Event.lead_id == handoff.lead_id, Event.type == REASSIGNED)
                                   .order_by(Event.id)).scalars():
        if (properties or {}).get("handoff_id") == handoff.id:
            return properties.get("from") or handoff.owner
    return handoff.owner


def open_handoff(
    session: Session, lead: Lead, *, scoring: ScoringConfig, now: datetime, source: str,
    owner: str | None = None, team: str | None = None, notice: str = "handoff", why: str | None = None,
) -> Handoff | None:
    """Open a handoff unless one is open already; moves the lead to sql-pending and tells the owner.

    The owner: the one given, else round-robin inside the team given (a scenario step's `team:`) or the first
    team of `sales.teams` whose `where` the lead matches, else round-robin over `sales.owners`."""
    if lead.suppressed is not None or open_handoff_of(session, lead.id) is not None:
        return None  # an address that unsubscribed, bounced or complained is no sales-ready lead
    contact_within = scoring.sla.contact_within if scoring.sla else DEFAULT_CONTACT_WITHIN
    target = scoring.sla.target if scoring.sla else DEFAULT_TARGET
    if owner is None and team is None:
        team = team_for(scoring, profile_of(lead))
    handoff = Handoff(lead_id=lead.id, owner=owner or pick_owner(session, scoring, team), team=team, source=source,
                      opened_at=now, target_at=now + target, deadline_at=now + contact_within, bant={})
    session.add(handoff)
    session.flush()
    move_stage(session, lead, "sql-pending", now=now, by=source, reason=f"handed to {handoff.owner}")
    notify_sales(session, handoff, lead, now=now, kind=notice, to=[handoff.owner], why=why)
    return handoff


def last_rejections(session: Session, lead_ids) -> dict[int, Handoff]:
    """The latest hand-off sales rejected, of each of these leads that has one: one query."""
    found: dict[int, Handoff] = {}
    ids = list(set(lead_ids))
    if ids:
        for handoff in session.exec(
            select(Handoff).where(Handoff.lead_id.in_(ids), Handoff.status == "rejected").order_by(Handoff.answered_at)
        ).scalars():
            found[handoff.lead_id] = handoff
    return found


def ready_for_sales(scoring: ScoringConfig, *, score: int, grade: str, events, rejection: Handoff | None,
                    now: datetime) -> bool | str | NotReady:
    """True at the hand-off point; while the lead cools off after a rejection, the sentence saying until when;
    otherwise what it misses (a NotReady: `score 29 < 60`).

    After a rejection only a sales-ready action that happened since counts (the score stays as it is)."""
    if rejection is not None:
        until = rejection.answered_at + scoring.handoff.after_rejection
        if now < until:
            return f"cooling off until {until:%Y-%m-%d} after rejection ({rejection.reason})"
    since = rejection.answered_at if rejection is not None else None
    return handoff_shortfall(scoring, score=score, grade=grade, events=events, since=since) or True


def sales_ready_since(session: Session, scoring: ScoringConfig, lead_id: int, since: datetime | None) -> list[EventFact]:
    """A sales-ready action of the lead's stored after `since` (its last rejection; None: ever), as a list of at most
    one: what `ready_for_sales` needs, asked of the database instead of reading the lead's whole history.

    The database returns candidates only (the listed event types, and the page visits whose properties contain a
    literal part of a `visited` glob, or an escaped character); each is then checked as `is_sales_ready` does."""
    kinds = [a for a in scoring.handoff.sales_ready if isinstance(a, str)]
    globs = [a.visited for a in scoring.handoff.sales_ready if not isinstance(a, str)]
    candidates = [Event.type.in_(kinds)] if kinds else []
    if globs:
        hints = [_literal_of(glob) for glob in globs]
        text = cast(Event.properties, String)
        near = None if "" in hints else or_(text.contains("\\", autoescape=True),
                                            *(text.contains(hint, autoescape=True) for hint in hints))
        candidates.append(Event.type == "page_visited" if near is None else and_(Event.type == "page_visited", near))
    if not candidates:
        return []
    query = select(Event.type, Event.occurred_at, Event.properties).where(Event.lead_id == lead_id, or_(*candidates))
    if since is not None:
        query = query.where(Event.occurred_at >= since)  # `>` is checked below, on the values as Python reads them
    for kind, occurred_at, properties in session.execute(query):
        fact = EventFact(type=kind, occurred_at=occurred_at, properties=dict(properties or {}))
        if (since is None or fact.occurred_at > since) and is_sales_ready(scoring, fact):
            return [fact]
    return []


def _literal_of(glob: str) -> str:
    """The longest run of plain characters (letters, digits, / . - ~) a path matching this glob must contain
    ("" if none): the JSON of an event's properties holds them as they are, unless the value has a character
    JSON escapes (a backslash in the JSON, also a candidate)."""
    head = glob.split("[", 1)[0]  # after a [...] set nothing is sure to be literal
    runs = "".join(c if c.isascii() and (c.isalnum() or c in "/.-~") else " " for c in head).split()
    return max(runs, key=len, default="")


def hot_again(session: Session, lead: Lead, event, *, scoring: ScoringConfig, now: datetime, cause: str) -> Handoff | None:
    """A lead sales put off ("later") who does a sales-ready action goes back to the same owner at once, whatever
    the re-engage date and with no score or grade threshold (sales qualified it already); the owner is emailed and
    the "later" hand-off counts as re-engaged (the re-engagement flow leaves it alone)."""
    if lead.stage != "later" or not is_sales_ready(scoring, event):
        return None
    later = session.exec(select(Handoff).where(Handoff.lead_id == lead.id, Handoff.status == "later")
                         .order_by(Handoff.id.desc()).limit(1)).scalars().first()
    if later is not None and event.occurred_at <= later.answered_at:
        return None  # an action from before sales said "later" was seen by sales already
    source = f"event:{cause}" + (f" (later until {later.later_until:%Y-%m-%d})" if later is not None else "")
    why = (f"jusqu'au {later.later_until:%d/%m/%Y}" if later is not None and later.later_until else "") + f", signal : {cause}"
    handoff = open_handoff(session, lead, scoring=scoring, now=now, source=source, notice="hot-again", why=why.lstrip(", "),
                           owner=later.owner if later is not None else None, team=later.team if later is not None else None)
    if handoff is not None and later is not None and later.reengaged_at is None:
        later.reengaged_at = now
    return handoff


WITHDRAWN_BECAUSE = {"unsubscribed": "s'est désinscrit", "email_complained": "s'est plaint d'un email (spam)",
                     "email_bounced": "a une adresse qui rejette nos emails"}


def withdraw(session: Session, lead: Lead, *, now: datetime, cause: str) -> Handoff | None:
    """Close the lead's open hand-off because it left (unsubscribed, complained, bounced); its owner is told."""
    handoff = open_handoff_of(session, lead.id)
    if handoff is None:
        return None
    handoff.status, handoff.reason, handoff.answered_at, handoff.answered_by = "withdrawn", cause, now, "relance"
    cancel_notices(session, handoff, why=f"hand-off withdrawn ({cause})")
    move_stage(session, lead, "disqualified", now=now, by=f"event:{cause}", reason=f"hand-off withdrawn: {cause}")
    notify_sales(session, handoff, lead, now=now, kind="withdrawn", to=[handoff.owner])
    return handoff


def notify_sales(session: Session, handoff: Handoff, lead: Lead, *, now: datetime, kind: str, to: list[str],
                 why: str | None = None) -> None:
    """An internal email (through the outbox and the transport) with profile, score explanation and activity.

    kind: handoff, reassigned, hot-again (a "later" lead turned hot), target (2 h missed), sla (deadline missed),
    withdrawn (the lead left); `why` is the line the email gives (default: the hand-off's reason)."""
    subject, context = staff_notice(session, handoff, lead, kind=kind, why=why)
    for address in dict.fromkeys(a for a in to if a and "@" in a):
        session.add(Outbox(enrollment_id=None, step_id=f"{kind}:{handoff.id}:{address}", visit=0, lead_id=lead.id, scenario="",
                           template="sales-handoff", subject=subject, to_address=address, status="pending",
                           kind="internal", marketing=False, options={"context": context}, created_at=now))


def staff_notice(session: Session, handoff: Handoff, lead: Lead, *, kind: str, why: str | None = None) -> tuple[str, dict[str, Any]]:
    """The subject (Jinja) and the context of a staff notice about a hand-off: the hand-off, how the score was
    earned, the lead's recent activity (what `notify_sales` sends and `relance preview --lead` shows)."""
    ledger = session.exec(
        select(ScoreChange).where(ScoreChange.lead_id == lead.id).order_by(ScoreChange.id.desc()).limit(10)
    ).scalars().all()
    recent = session.exec(select(Event).where(Event.lead_id == lead.id).order_by(Event.occurred_at.desc()).limit(10)).scalars().all()
    context: dict[str, Any] = {
        "handoff": {"owner": handoff.owner, "deadline": f"{handoff.deadline_at:%Y-%m-%d %H:%M} UTC",
                    "opened": f"{handoff.opened_at:%Y-%m-%d %H:%M} UTC", "team": handoff.team or "", "source": handoff.source,
                    "target": f"{handoff.target_at:%Y-%m-%d %H:%M} UTC", "kind": kind,
                    "why": why if why is not None else WITHDRAWN_BECAUSE.get(handoff.reason or "", handoff.reason or "")},
        "score_explanation": [f"{c.points:+d} {c.cause}" + (f" ({c.scenario}/{c.step_id})" if c.step_id else "") for c in reversed(ledger)],
        "recent_activity": [f"{e.occurred_at:%Y-%m-%d %H:%M} {e.type} {_short(e.properties)}".strip() for e in recent],
    }
    return NOTICE_SUBJECTS[kind], context


NOTICE_SUBJECTS = {
    "handoff": "Lead à contacter avant le {{ handoff.deadline }} : {{ lead.first_name }} {{ lead.last_name }} ({{ lead.company }})",
    "reassigned": "Lead à contacter avant le {{ handoff.deadline }} : {{ lead.first_name }} {{ lead.last_name }} ({{ lead.company }})",
    "hot-again": "Lead en attente redevenu chaud : {{ lead.first_name }} {{ lead.last_name }} ({{ lead.company }}), à contacter avant le {{ handoff.deadline }}",
    "target": "Objectif de contact dépassé : {{ lead.first_name }} {{ lead.last_name }} ({{ lead.company }}) attend depuis le {{ handoff.opened }}",
    "sla": "SLA dépassé : {{ lead.first_name }} {{ lead.last_name }} ({{ lead.company }}) attend un appel",
    "withdrawn": "Lead retiré : {{ lead.first_name }} {{ lead.last_name }} ({{ lead.company }}) {{ handoff.why }}",
}


STALE_WHEN_CLOSED = ("handoff", "reassigned", "hot-again", "target", "sla")  # "please call" notices; "withdrawn" is news


def cancel_notices(session: Session, handoff: Handoff, *, why: str, to: str | None = None) -> int:
    """Skip the staff notices of this hand-off still waiting to leave (of one recipient, `to`): once it is answered,
    closed or reassigned, "call this lead before DATE" is stale. The number skipped."""
    who = to if to is not None else "%"
    return session.execute(
        update(Outbox).where(Outbox.status == "pending", Outbox.enrollment_id.is_(None),
                             or_(*(Outbox.step_id.like(f"{kind}:{handoff.id}:{who}") for kind in STALE_WHEN_CLOSED)))
        .values(status="skipped", error=f"{why} before it left: not sent")
    ).rowcount or 0


def _short(properties: dict[str, Any]) -> str:
    keep = {k: v for k, v in (properties or {}).items() if k in ("asset", "path", "url", "link", "form", "step_id")}
    return " ".join(f"{k}={v}" for k, v in keep.items())


@dataclass(frozen=True)
class Answer:
    verdict: str  # accept | reject | later
    by: str
    reason: str | None = None
    note: str = ""
    bant: dict[str, str] | None = None
    until: datetime | None = None


def answer(session: Session, *, email: str, reply: Answer, scoring: ScoringConfig, now: datetime) -> Handoff:
    """Record sales' answer to the lead's open handoff and move the lead's stage."""

    lead = find_lead(session, email)
    if lead is None:
        raise NoSuchLead(f"no lead with email {email!r}")
    lock_active_enrollments(session, [lead.id])  # before the lead changes: see lock_active_enrollments
    handoff = open_handoff_of(session, lead.id)
    if handoff is None:
        last = session.exec(select(Handoff).where(Handoff.lead_id == lead.id).order_by(Handoff.id.desc())).scalars().first()
        if last is None:
            raise HandoffClosed(f"{lead.email} was never handed to sales")
        raise HandoffClosed(f"the hand-off of {lead.email} is closed: {last.status} on {last.answered_at:%Y-%m-%d} by {last.answered_by}")
    handoff.answered_at, handoff.answered_by, handoff.note = now, reply.by, reply.note
    match reply.verdict:
        case "accept":
            unknown = sorted(set(reply.bant or {}) - set(BANT_FIELDS))
            if unknown:
                raise BadAnswer("bant", f"unknown BANT field {unknown[0]!r}: use {', '.join(BANT_FIELDS)}")
            handoff.status, handoff.bant = "accepted", dict(reply.bant or {})
            move_stage(session, lead, "sql", now=now, by=reply.by, reason="accepted by sales" + _bant_text(handoff.bant))
        case "reject":
            if reply.reason not in REJECT_REASONS:
                raise BadAnswer("reason", f"a rejection needs a reason among {', '.join(REJECT_REASONS)} (got {reply.reason!r})")
            handoff.status, handoff.reason = "rejected", reply.reason
            move_stage(session, lead, "nurturing", now=now, by=reply.by,
                       reason=f"rejected by sales: {reply.reason}" + (f" ({reply.note})" if reply.note else ""))
        case "later":
            default = scoring.later.default_delay if scoring.later else timedelta(days=90)
            until = reply.until or now + default
            if until <= now:
                raise BadAnswer("until", f"the re-engage date {until:%Y-%m-%d} is not in the future")
            handoff.status, handoff.reason, handoff.later_until = "later", reply.reason, until
            move_stage(session, lead, "later", now=now, by=reply.by, reason=f"later: re-engage on {until:%Y-%m-%d}")
        case _:
            raise BadAnswer("verdict", f"unknown answer {reply.verdict!r}: accept, reject or later")
    cancel_notices(session, handoff, why=f"hand-off answered ({reply.verdict}) by {reply.by}")
    wake_for_lead_changes(session, [lead.id], scoring=scoring, now=now)  # a wait on the new stage goes on
    return handoff


def reassign(session: Session, *, email: str, to: str, by: str, now: datetime) -> Handoff:
    """Give the lead's open hand-off to another owner, who gets the hand-off email; the SLA clock keeps running.

    The change is an event of the lead (`handoff_reassigned`: from, to, by), shown by `relance lead show`."""
    lead = find_lead(session, email)
    if lead is None:
        raise NoSuchLead(f"no lead with email {email!r}")
    handoff = open_handoff_of(session, lead.id)
    if handoff is None:
        raise HandoffClosed(f"{lead.email} has no open hand-off to reassign")
    to = to.strip().lower()
    if "@" not in to or any(c.isspace() for c in to):
        raise BadAnswer("to", f"the new owner must be an email address (got {to!r})")
    if to == handoff.owner.lower():
        raise BadAnswer("to", f"the hand-off of {lead.email} is already owned by {handoff.owner}")
    before, handoff.owner = handoff.owner, to
    cancel_notices(session, handoff, why=f"hand-off reassigned to {to}", to=before)
    record_events(session, [dict(
        lead_id=lead.id, type=REASSIGNED, occurred_at=now, received_at=now,
        properties={"handoff_id": handoff.id, "from": before, "to": to, "by": by},
        idempotency_key=f"{REASSIGNED}:{handoff.id}:{now.isoformat()}:{to}",
    )])
    notify_sales(session, handoff, lead, now=now, kind="reassigned", to=[to], why=f"{by} (auparavant {before})")
    return handoff


REASSIGNED = "handoff_reassigned"


def open_handoffs(session: Session, *, now: datetime, owner: str | None = None, overdue: bool = False) -> list[dict[str, Any]]:
    """The open hand-offs (of one owner; only those past their deadline), soonest deadline first, with the lead,
    its age and the minutes left before target and deadline (negative: overdue by that much)."""
    query = select(Handoff, Lead).join(Lead, Lead.id == Handoff.lead_id).where(Handoff.status == "open")
    if owner:
        query = query.where(func.lower(Handoff.owner) == owner.strip().lower())
    if overdue:
        query = query.where(Handoff.deadline_at <= now)
    rows = []
    for handoff, lead in session.execute(query.order_by(Handoff.deadline_at, Handoff.id)).all():
        rows.append({
            "email": lead.email, "name": f"{lead.first_name} {lead.last_name}".strip(), "company": lead.company,
            "score": lead.score, "grade": lead.grade, "owner": handoff.owner, "team": handoff.team, "source": handoff.source,
            "opened_at": handoff.opened_at, "target_at": handoff.target_at, "deadline_at": handoff.deadline_at,
            "age_minutes": _minutes(now - handoff.opened_at), "target_left_minutes": _minutes(handoff.target_at - now),
            "deadline_left_minutes": _minutes(handoff.deadline_at - now), "overdue": handoff.deadline_at <= now,
        })
    return rows


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() / 60)  # toward zero: 30 min 40 s overdue is -30


def _bant_text(bant: dict[str, str]) -> str:
    return (" (" + ", ".join(f"{k}: {v}" for k, v in bant.items()) + ")") if bant else ""


@dataclass
class SlaReport:
    open: int = 0
    target_missed: int = 0
    deadline_missed: int = 0


def flag_sla(session: Session, *, scoring: ScoringConfig, now: datetime) -> SlaReport:
    """Flag open handoffs past their target and past their deadline; a missed deadline tells the owner and the manager,
    a missed target the owner when scoring.yaml says `sla: {alert_on_target: true}` (not when the deadline passed too).

    Each breach is flagged once, so running it again changes nothing."""
    report = SlaReport()
    alert_on_target = scoring.sla is not None and scoring.sla.alert_on_target
    for handoff in session.exec(select(Handoff).where(Handoff.status == "open").order_by(Handoff.id)).scalars():
        report.open += 1
        if handoff.target_missed_at is None and handoff.target_at <= now:
            handoff.target_missed_at = now
            report.target_missed += 1
            if alert_on_target and handoff.deadline_at > now:
                notify_sales(session, handoff, session.get(Lead, handoff.lead_id), now=now, kind="target", to=[handoff.owner])
        if handoff.deadline_missed_at is None and handoff.deadline_at <= now:
            handoff.deadline_missed_at = now
            report.deadline_missed += 1
            lead = session.get(Lead, handoff.lead_id)
            notify_sales(session, handoff, lead, now=now, kind="sla", to=[handoff.owner, scoring.sales.manager or ""])
    return report


def later_due(session: Session, *, now: datetime) -> list[Handoff]:
    """"Later" handoffs whose re-engage date has come and that were not re-engaged yet."""
    return list(session.exec(
        select(Handoff).where(Handoff.status == "later", Handoff.later_until <= now, Handoff.reengaged_at.is_(None)).order_by(Handoff.id)
    ).scalars())
