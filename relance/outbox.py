"""Messages whose fate is unknown: handed to the transport, and no answer came back.

Two ways to get there: the worker died mid-send (the row stayed `sending`: each tick turns such rows
older than CUT_OFF_AFTER into `unknown`), or the transport timed out or lost the connection after the
request left (`unknown` at once). relance never sends them again by itself: it cannot know whether
they left. Once the transport's logs say, an operator sets each one to `pending` (the next tick
sends it again) or to `failed` (`relance outbox resolve`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, func, or_, select, update
from sqlmodel import Session

from relance.store.tables import Outbox

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


def resolve_cut_off(engine: Engine, outbox_ids: list[int], *, verdict: str, note: str = "") -> list[str]:
    """Set `unknown` (or `sending`) rows to `pending` or `failed`; returns one problem line per id that is neither."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    with Session(engine) as session:
        found = dict(session.execute(select(Outbox.id, Outbox.status).where(Outbox.id.in_(outbox_ids))).all())
        problems = [f"outbox {i}: no such message" if i not in found else f"outbox {i} is {found[i]}, not unknown: left as it is"
                    for i in outbox_ids if found.get(i) not in UNSETTLED]
        chosen = [i for i in outbox_ids if found.get(i) in UNSETTLED]
        if chosen:
            error = f"outcome unknown; set to {verdict} by an operator" + (f": {note}" if note else "")
            session.execute(update(Outbox).where(Outbox.id.in_(chosen), or_(*(Outbox.status == s for s in UNSETTLED)))
                            .values(status=verdict, error=error))
            session.commit()
    return problems
