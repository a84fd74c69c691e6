"""The sending policy at send time: may this marketing email go now, across every scenario and every worker?

`check` runs in the transaction that then claims the row: it first locks the lead (PostgreSQL: `FOR UPDATE` on its
row; SQLite: a write, which takes the database's write lock), so two deliveries to the same lead, from ticks of
different scenarios on different workers, take turns: the second counts the first's send. The claim is committed
with the lock still held, so no send slips between the count and the claim.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update

from relance.policy import Hold, SendingPolicy, hold
from relance.store.tables import Lead, Outbox

COUNTED = ("sending", "sent", "unknown")  # a send that may have left counts against the cap
_OUTBOX = Outbox.__table__
_LEAD = Lead.__table__


def policed(row, policy: SendingPolicy) -> bool:
    """Whether the policy applies to this outbox row: marketing email to a lead, and a policy that holds something."""
    return row.kind == "lead" and row.marketing and policy.holds_anything


def lock_lead(connection, lead_id: int) -> None:
    """Take the lead's turn until the transaction ends (see the module's docstring)."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(_LEAD.c.id).where(_LEAD.c.id == lead_id).with_for_update())
    else:
        connection.execute(update(_LEAD).where(_LEAD.c.id == lead_id).values(id=_LEAD.c.id))


def ready(now: datetime):
    """The outbox rows' condition for "not held back any more at `now`"."""
    return or_(_OUTBOX.c.hold_until.is_(None), _OUTBOX.c.hold_until <= now)


def check(connection, row, lead, *, policy: SendingPolicy, now: datetime) -> Hold | None:
    """Lock the lead, then: None when the email may go now (claim it before the transaction ends), else its Hold."""
    lock_lead(connection, row.lead_id)
    others = connection.execute(select(_OUTBOX.c.status, _OUTBOX.c.attempted_at).where(
        _OUTBOX.c.lead_id == row.lead_id, _OUTBOX.c.kind == "lead", _OUTBOX.c.marketing, _OUTBOX.c.id != row.id,
        or_(and_(_OUTBOX.c.status.in_(COUNTED), _OUTBOX.c.attempted_at > now - policy.longest_window),
            and_(_OUTBOX.c.status == "pending", ready(now), _OUTBOX.c.created_at <= now,
                 or_(_OUTBOX.c.priority > row.priority, and_(_OUTBOX.c.priority == row.priority, _OUTBOX.c.id < row.id)))),
    )).all()
    sent = [o.attempted_at for o in others if o.status in COUNTED]
    return hold(policy, now=now, tz=lead.timezone, sent=sent, ahead=len(others) - len(sent))


def held_values(row, held: Hold, *, policy: SendingPolicy) -> dict[str, Any]:
    """What a held row's outbox row becomes: pending until the hold ends, or skipped when its scenario skips what
    is held (`held: skip`, else sending.yaml's `held:`)."""
    if (row.options or {}).get("if_held", policy.held) == "skip":
        return {"status": "skipped", "held": held.reason, "hold_until": None,
                "error": f"held back by sending.yaml ({held.reason}) and skipped: its scenario says held: skip"}
    return {"hold_until": held.until, "held": held.reason}

