"""Every score change and every stage move goes through here, so each one leaves a row that explains it."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

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
    session.add(ScoreChange(lead_id=lead.id, points=points, score_after=lead.score, cause=cause, event_id=event_id,
                            scenario=scenario, step_id=step_id, detail=detail, at=now))


def move_stage(session: Session, lead: Lead, to: str, *, now: datetime, by: str = "relance", reason: str = "") -> bool:
    """Move the lead to a stage and write the history row; False when it is already there."""
    if lead.stage == to:
        return False
    session.add(StageChange(lead_id=lead.id, from_stage=lead.stage, to_stage=to, by=by, reason=reason, at=now))
    lead.stage = to
    lead.updated_at = now
    return True
