"""Every score change and every stage move goes through here, so each one leaves a row that explains it.

Score changes are the hot path of ingestion (most events carry points): a `ScoreLedger` holds the rows of one unit
of work as plain values and writes them in one INSERT when told to (`write`), instead of one ORM object or one
statement each (~50 us apiece). Nothing writes them behind the caller's back: whoever adds points writes them
before anything reads the ledger and before its transaction commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from relance.scoring.config import ScoringConfig
from relance.store.tables import Lead, ScoreChange, StageChange


class ScoreLedger:
    """The score changes of one unit of work in `session`: `add` changes the lead's score at once and keeps its
    ledger row; `write` puts the rows kept so far in the ledger (one INSERT). `with ScoreLedger(session) as ledger:`
    writes on a clean exit; an error leaves them unwritten, for the transaction's owner to roll back."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.rows: list[dict[str, Any]] = []

    def add(self, lead: Lead, points: int, *, cause: str, now: datetime, event_id: int | None = None,
            scenario: str | None = None, step_id: str | None = None, detail: str = "") -> None:
        """Change the behaviour score and keep its ledger row (nothing for 0 points)."""
        if not points:
            return
        lead.score += points
        lead.updated_at = now
        self.rows.append(dict(lead_id=lead.id, points=points, score_after=lead.score, cause=cause, event_id=event_id,
                              scenario=scenario, step_id=step_id, detail=detail, at=now))

    def write(self) -> int:
        """Write the rows kept so far, in the session's transaction; how many."""
        rows, self.rows = self.rows, []
        if rows:
            self.session.execute(insert(ScoreChange.__table__), rows)
        return len(rows)

    def __enter__(self) -> "ScoreLedger":
        return self

    def __exit__(self, kind, *_: Any) -> None:
        if kind is None:
            self.write()


def move_stage(session: Session, lead: Lead, to: str, *, now: datetime, by: str = "relance", reason: str = "") -> bool:
    """Move the lead to a stage and write the history row; False when it is already there."""
    if lead.stage == to:
        return False
    session.add(StageChange(lead_id=lead.id, from_stage=lead.stage, to_stage=to, by=by, reason=reason, at=now))
    lead.stage = to
    lead.updated_at = now
    return True


def mql_reached(scoring: ScoringConfig, *, stage: str, score: int, grade: str) -> bool:
    """The MQL line: a lead or nurtured lead that meets scoring.yaml's `mql` threshold (ingestion and the simulator)."""
    return stage in ("lead", "nurturing") and scoring.meets(scoring.mql, score=score, grade=grade)


def reach_mql(session: Session, lead: Lead, scoring: ScoringConfig, *, now: datetime) -> bool:
    """A lead or nurtured lead that meets the MQL threshold becomes an MQL (after any change of score or grade)."""
    if mql_reached(scoring, stage=lead.stage, score=lead.score, grade=lead.grade):
        t = scoring.mql
        return move_stage(session, lead, "mql", now=now,
                          reason=f"score {lead.score} >= {t.score_at_least} and grade {lead.grade} >= {t.grade_at_least}")
    return False
