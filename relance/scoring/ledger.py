"""Every score change and every stage move goes through here, so each one leaves a row that explains it.

Score changes are the hot path of ingestion (most events carry points): their ledger rows are kept
as plain values on the session and written in one INSERT when the session flushes or commits,
instead of one ORM object each (~50 us to build, plus its unit-of-work bookkeeping).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session

from relance.scoring.config import ScoringConfig
from relance.store.tables import Lead, ScoreChange, StageChange


def add_points(
    session: Session, lead: Lead, points: int, *, cause: str, now: datetime, event_id: int | None = None,
    scenario: str | None = None, step_id: str | None = None, detail: str = "",
) -> None:
    """Change the behaviour score and write the ledger row (nothing for 0 points)."""
    if not points:
        return
    lead.score += points
    lead.updated_at = now
    session.info.setdefault(_PENDING, []).append(dict(
        lead_id=lead.id, points=points, score_after=lead.score, cause=cause, event_id=event_id,
        scenario=scenario, step_id=step_id, detail=detail, at=now,
    ))


_PENDING = "relance.score_changes"


@event.listens_for(OrmSession, "before_flush")
@event.listens_for(OrmSession, "before_commit")
def _write_score_changes(session: OrmSession, *_: Any) -> None:
    """Write the session's pending ledger rows (a flush or commit makes them visible like any other row)."""
    rows = session.info.pop(_PENDING, None)
    if rows:
        session.execute(insert(ScoreChange.__table__), rows)


@event.listens_for(OrmSession, "after_rollback")
def _forget_score_changes(session: OrmSession) -> None:
    session.info.pop(_PENDING, None)


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
