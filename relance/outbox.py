"""The outbox's life after a send: unknown outcomes, staff mail that fails, operators' resends.

Messages whose fate is unknown were handed to the transport and no answer came back. Two ways to get
there: the worker died mid-send (the row stayed `sending`: each tick turns such rows older than
CUT_OFF_AFTER into `unknown`), or the transport timed out or lost the connection after the request left
(`unknown` at once). relance never sends them again by itself: it cannot know whether they left. Once
the transport's logs say, an operator sets each one to `pending` (the next tick sends it again) or to
`failed` (`relance outbox resolve`).

A `failed` message is sent again only when an operator says so (`relance outbox resend`). Staff mail
(kind `internal`) never expires; when one fails for good, the sales manager gets one email saying which
message to whom failed and why (`alert_for`), and an alert that fails is not alerted about.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, func, or_, select, update
from sqlmodel import Session

from relance.store.tables import Lead, Outbox
from relance.suppression import suppressed_among

VERDICTS = ("pending", "failed")
UNSETTLED = ("sending", "unknown")
# one message is in flight for at most the transport's timeout (seconds) and its throttle retries:
# `sending` for longer means the worker that sent it is gone
CUT_OFF_AFTER = timedelta(minutes=10)


def mark_cut_off(engine: Engine, *, now: datetime) -> list[int]:
    """Turn rows left `sending` for over CUT_OFF_AFTER into `unknown`; their ids."""
    since = func.coalesce(Outbox.attempted_at, Outbox.created_at)
    with Session(engine) as session:
        ids = list(session.execute(
            update(Outbox).where(Outbox.status == "sending", since < now - CUT_OFF_AFTER)
            .values(status="unknown", error=f"cut off mid-send: still sending {CUT_OFF_AFTER.total_seconds() / 60:g} min "
                                            "after it was handed to the transport (its worker died); it may have left")
            .returning(Outbox.id)
        ).scalars())
        session.commit()
    return sorted(ids)


def resolve_cut_off(engine: Engine, outbox_ids: list[int], *, verdict: str, now: datetime, note: str = "") -> list[str]:
    """Set `unknown` (or `sending`) rows to `pending` or `failed`; returns one problem line per id that is neither."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    with Session(engine) as session:
        found = dict(session.execute(select(Outbox.id, Outbox.status).where(Outbox.id.in_(outbox_ids))).all())
        problems = [_not_unknown(i, found.get(i)) for i in outbox_ids if found.get(i) not in UNSETTLED]
        chosen = [i for i in outbox_ids if found.get(i) in UNSETTLED]
        if chosen:
            error = f"outcome unknown; set to {verdict} by an operator" + (f": {note}" if note else "")
            if verdict == "failed":
                session.execute(update(Outbox).where(Outbox.id.in_(chosen), or_(*(Outbox.status == s for s in UNSETTLED)))
                                .values(status=verdict, error=error))
            else:  # pending again: its 48 h before expiring count from now, not from when it was written
                for outbox_id, options in session.execute(select(Outbox.id, Outbox.options).where(Outbox.id.in_(chosen))).all():
                    session.execute(update(Outbox).where(Outbox.id == outbox_id, or_(*(Outbox.status == s for s in UNSETTLED)))
                                    .values(status=verdict, error=error, options=_requeued(options, now)))
            session.commit()
    return problems


def _not_unknown(outbox_id: int, status: str | None) -> str:
    if status is None:
        return f"outbox {outbox_id}: no such message"
    if status == "failed":
        return f"outbox {outbox_id} is failed, not unknown: to send it again, `relance outbox resend {outbox_id}`"
    return f"outbox {outbox_id} is {status}, not unknown: left as it is"


# --------------------------------------------------------------------------- staff mail and operators' resends

REQUEUED = "requeued_at"  # options key: when an operator last put the row back to pending (ISO); expiry counts from it
ALERT_TEMPLATE = "staff-mail-failed"
_WHAT = {"handoff": "l'email de hand-off", "sla": "l'alerte SLA", "withdrawn": "l'avis de retrait du hand-off"}


def is_staff_mail(kind: str) -> bool:
    """Mail meant for the team (hand-off, SLA, withdrawn, notify to a person, alerts): never expires."""
    return kind == "internal"


def requeued_since(options: dict | None, since: datetime) -> bool:
    """An operator put the row back to pending at or after `since`."""
    at = (options or {}).get(REQUEUED)
    return bool(at) and datetime.fromisoformat(at) >= since


def _requeued(options: dict | None, now: datetime) -> dict:
    return {**(options or {}), REQUEUED: now.isoformat()}


def alert_for(row, *, manager: str | None, why: str, now: datetime) -> dict | None:
    """The outbox row telling the manager that staff email `row` failed for good, or None: not staff mail, an
    alert itself (an alert about a failed alert is never written), or no manager to tell."""
    options = row.options or {}
    if not is_staff_mail(row.kind) or options.get("alert_for") or not manager:
        return None
    kind = ((options.get("context") or {}).get("handoff") or {}).get("kind")
    what = _WHAT.get(kind) or f"la notification de l'étape {row.step_id} du scénario {row.scenario}"
    failed = {"id": row.id, "to": row.to_address, "what": what, "why": why, "resend": f"relance outbox resend {row.id}"}
    return dict(
        enrollment_id=None, step_id=f"alert:{row.id}", visit=0, lead_id=row.lead_id, scenario=row.scenario or "",
        template=ALERT_TEMPLATE, to_address=manager, status="pending", attempts=0, created_at=now,
        subject="Email interne non remis à {{ failed.to }} : {{ lead.first_name }} {{ lead.last_name }} ({{ lead.company }})",
        kind="internal", options={"alert_for": row.id, "context": {"failed": failed}},
    )


def resend(engine: Engine, outbox_ids: list[int], *, now: datetime, note: str = "") -> tuple[list[int], list[str]]:
    """Put `failed` rows back to `pending` (the next tick or delivery pass sends them), saying so in their error;
    returns the ids put back and one problem line per id left as it is (sent, pending, unknown, skipped,
    suppressed recipient, no such message)."""
    with Session(engine) as session:
        rows = {r.id: r for r in session.execute(
            select(Outbox.id, Outbox.status, Outbox.error, Outbox.sent_at, Outbox.kind, Outbox.options, Outbox.to_address,
                   Lead.suppressed)
            .join(Lead, Lead.id == Outbox.lead_id).where(Outbox.id.in_(outbox_ids))).all()}
        blocked = suppressed_among(session, {r.to_address for r in rows.values()})  # by hash: forgotten ones too
        done, problems = [], []
        for outbox_id in dict.fromkeys(outbox_ids):
            row = rows.get(outbox_id)
            problem = _not_resendable(outbox_id, row, blocked)
            if problem:
                problems.append(problem)
                continue
            history = f"resent by an operator at {now:%Y-%m-%d %H:%M} UTC" + (f": {note}" if note else "") + f" (it had failed: {row.error or 'no reason kept'})"
            taken = session.execute(update(Outbox).where(Outbox.id == outbox_id, Outbox.status == "failed").values(
                status="pending", error=history[:2000], options=_requeued(row.options, now))).rowcount
            if taken:
                done.append(outbox_id)
            else:
                problems.append(f"outbox {outbox_id} changed meanwhile: left as it is")
        session.commit()
    return done, problems


def _not_resendable(outbox_id: int, row, blocked: dict[str, str]) -> str | None:
    """Why this row cannot be resent, in one line; None if it can."""
    if row is None:
        return f"outbox {outbox_id}: no such message"
    if row.status == "sent":
        return f"outbox {outbox_id} was sent at {row.sent_at:%Y-%m-%d %H:%M} UTC, not resent"
    if row.status == "pending":
        return f"outbox {outbox_id} is already pending: the next tick sends it"
    if row.status in UNSETTLED:
        return (f"outbox {outbox_id} has an unknown outcome (it may have left): check the transport's logs, then "
                f"`relance outbox resolve {outbox_id} --as pending|failed`")
    if row.status != "failed":
        return f"outbox {outbox_id} was {row.status} ({row.error or 'no reason kept'}), not resent"
    reason = blocked.get(row.to_address.lower()) or (row.suppressed if row.kind == "lead" else None)
    if reason:
        return f"outbox {outbox_id}: {row.to_address} is suppressed ({reason}), not resent"
    return None


LISTED = ("pending", "sending", "unknown", "failed", "sent", "skipped")
NEEDS_ATTENTION = ("failed", "unknown", "sending", "pending")


def listing(engine: Engine, *, statuses: tuple[str, ...] = NEEDS_ATTENTION, limit: int = 100) -> tuple[list[dict], int]:
    """Outbox rows in these statuses, newest first (at most `limit`), and how many there are in all."""
    where = Outbox.status.in_(statuses)
    with Session(engine) as session:
        total = session.execute(select(func.count()).select_from(Outbox).where(where)).scalar_one()
        rows = session.execute(
            select(Outbox.id, Outbox.status, Outbox.kind, Outbox.to_address, Outbox.template, Outbox.scenario,
                   Outbox.step_id, Outbox.attempts, Outbox.error, Outbox.created_at, Outbox.sent_at, Lead.email)
            .join(Lead, Lead.id == Outbox.lead_id).where(where).order_by(Outbox.id.desc()).limit(limit)).all()
    return [{
        "id": r.id, "status": r.status, "kind": r.kind, "to": r.to_address, "lead": r.email,
        "template": r.template, "scenario": r.scenario, "step_id": r.step_id, "attempts": r.attempts, "error": r.error,
        "created_at": r.created_at.isoformat() if r.created_at else None, "sent_at": r.sent_at.isoformat() if r.sent_at else None,
    } for r in rows], total
