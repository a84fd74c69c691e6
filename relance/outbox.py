"""What an operator does with messages cut off mid-send (`sending` when their worker died).

relance never sends them again by itself: it cannot know whether they left. Once the transport's
logs say, the operator sets each one back to `pending` (the next tick sends it) or to `failed`.
"""

from __future__ import annotations

from sqlalchemy import Engine, select, update
from sqlmodel import Session

from relance.store.tables import Outbox

VERDICTS = ("pending", "failed")


def resolve_cut_off(engine: Engine, outbox_ids: list[int], *, verdict: str, note: str = "") -> list[str]:
    """Set `sending` rows to `pending` or `failed`; returns one problem line per id that is not `sending`."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    with Session(engine) as session:
        found = dict(session.execute(select(Outbox.id, Outbox.status).where(Outbox.id.in_(outbox_ids))).all())
        problems = [f"outbox {i}: no such message" if i not in found else f"outbox {i} is {found[i]}, not sending: left as it is"
                    for i in outbox_ids if found.get(i) != "sending"]
        chosen = [i for i in outbox_ids if found.get(i) == "sending"]
        if chosen:
            error = f"cut off mid-send; set to {verdict} by an operator" + (f": {note}" if note else "")
            session.execute(update(Outbox).where(Outbox.id.in_(chosen), Outbox.status == "sending").values(status=verdict, error=error))
            session.commit()
    return problems
