"""Decay: the behaviour score of an idle lead fades by `percent` every `every` (scoring.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session

from relance.scoring.config import ScoringConfig
from relance.scoring.ledger import ScoreLedger
from relance.store.tables import Event, Lead, ScoreChange
from relance.wakes import lock_active_enrollments, wake_for_lead_changes


@dataclass
class DecayReport:
    leads: int = 0
    points: int = 0
    woken: int = 0  # waits on the score or temperature (`not: {score_at_least}`, `temperature: cold`) it ended


def decay_scores(session: Session, *, scoring: ScoringConfig, now: datetime, batch_size: int = 1000,
                 commit: bool = False) -> DecayReport:
    """Take `percent` off each positive score idle for `every` since its last event or last decay.

    A chunk of `batch_size` leads at a time, in the caller's transaction; with `commit`, each chunk is committed
    as it is written (what the decay flow does: a long run holds no lock for long), as `import_leads` does.
    Running it twice at the same time decays once: the ledger's decay row is the new start."""
    report = DecayReport()
    if scoring.decay is None:
        return report
    every, percent = scoring.decay.every, scoring.decay.percent
    last_id = 0
    while leads := session.exec(
        select(Lead).where(Lead.id > last_id, Lead.score > 0).order_by(Lead.id).limit(batch_size)
    ).scalars().all():
        last_id = leads[-1].id
        ids = [lead.id for lead in leads]
        decayed: list[int] = []
        last_event = dict(session.exec(
            select(Event.lead_id, func.max(Event.occurred_at)).where(Event.lead_id.in_(ids)).group_by(Event.lead_id)
        ).all())
        last_decay = dict(session.exec(
            select(ScoreChange.lead_id, func.max(ScoreChange.at))
            .where(ScoreChange.lead_id.in_(ids), ScoreChange.cause == "decay").group_by(ScoreChange.lead_id)
        ).all())
        idle_since = {lead.id: _aware(max(t for t in (lead.created_at, last_event.get(lead.id), last_decay.get(lead.id))
                                          if t is not None), now) for lead in leads}
        idle = [lead for lead in leads if now - idle_since[lead.id] >= every]
        lock_active_enrollments(session, [lead.id for lead in idle])  # before the leads change: see there
        with ScoreLedger(session) as ledger:  # the chunk's decay rows, in one INSERT
            for lead in idle:
                points = -max(1, round(lead.score * percent / 100))
                ledger.add(lead, points, cause="decay", now=now, detail=f"idle since {idle_since[lead.id]:%Y-%m-%d}")
                decayed.append(lead.id)
                report.leads += 1
                report.points += points
        report.woken += wake_for_lead_changes(session, decayed, scoring=scoring, now=now)
        if commit:
            session.commit()
    session.flush()
    return report


def _aware(value: datetime, like: datetime) -> datetime:
    """Aggregates come back naive from SQLite; they are UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=like.tzinfo)
