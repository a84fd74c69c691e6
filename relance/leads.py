"""What relance knows about one lead, as plain data (for `relance lead show` and the API)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator, Mapping, Sequence

from sqlalchemy import bindparam, select, update
from sqlmodel import Session

from relance.clock import SystemClock
from relance.consent import basis_of, consent_of
from relance.scoring.config import ScoringConfig
from relance.scoring.rules import fit_points, grade_of
from relance.store.repo import find_lead
from relance.store.tables import Deal, Enrollment, Event, Handoff, Lead, Outbox, ScoreChange, StageChange, profile_of
from relance.suppression import entry_of
from relance.wakes import wake_for_lead_changes

_SUMMARY = ("stage", "score", "fit", "grade", "fields", "tags", "suppressed", "created_at", "updated_at")


def lead_summary(session: Session, *, email: str, scoring: ScoringConfig) -> dict[str, Any] | None:
    """Profile, stage, score, grade, enrollments and recent emails of a lead; None if unknown. `scoring`: the
    scoring.yaml the tick reads (temperature is computed from it, never from the defaults)."""
    lead = find_lead(session, email)
    if lead is None:
        return None
    summary: dict[str, Any] = {**profile_of(lead), **{key: getattr(lead, key) for key in _SUMMARY}}
    summary["temperature"] = scoring.temperature_of(lead.score)
    summary["consent"] = consent_of(lead.fields)  # state, newest record, every record (relance.consent)
    summary["basis"] = basis_of(lead.fields)  # the lawful basis it may be mailed on, or None
    summary["enrollments"] = [
        {
            "scenario": e.scenario, "version_id": e.version_id, "status": e.status, "step_id": e.step_id,
            "due_at": e.due_at, "waiting": e.waiting, "entered_at": e.entered_at, "left_at": e.left_at,
            "exit_reason": e.exit_reason,
        }
        for e in session.exec(
            select(Enrollment).where(Enrollment.lead_id == lead.id).order_by(Enrollment.entered_at, Enrollment.id)
        ).scalars()
    ]
    summary["score_ledger"] = [
        {"at": c.at, "points": c.points, "score_after": c.score_after, "cause": c.cause, "scenario": c.scenario,
         "step_id": c.step_id, "detail": c.detail}
        for c in session.exec(select(ScoreChange).where(ScoreChange.lead_id == lead.id).order_by(ScoreChange.id)).scalars()
    ]
    summary["stage_history"] = [
        {"at": c.at, "from": c.from_stage, "to": c.to_stage, "by": c.by, "reason": c.reason}
        for c in session.exec(select(StageChange).where(StageChange.lead_id == lead.id).order_by(StageChange.id)).scalars()
    ]
    moves: dict[int, list[dict[str, Any]]] = {}  # reassignments by hand-off, oldest first
    for e in session.exec(select(Event).where(Event.lead_id == lead.id, Event.type == "handoff_reassigned")
                          .order_by(Event.occurred_at, Event.id)).scalars():
        p = e.properties or {}
        moves.setdefault(p.get("handoff_id"), []).append({"at": e.occurred_at, "from": p.get("from"), "to": p.get("to"), "by": p.get("by")})
    summary["handoffs"] = [
        {"id": h.id, "status": h.status, "owner": h.owner, "team": h.team, "source": h.source, "opened_at": h.opened_at,
         "target_at": h.target_at, "deadline_at": h.deadline_at, "target_missed_at": h.target_missed_at,
         "deadline_missed_at": h.deadline_missed_at, "answered_at": h.answered_at, "answered_by": h.answered_by,
         "reason": h.reason, "note": h.note, "bant": h.bant, "later_until": h.later_until, "reengaged_at": h.reengaged_at,
         "reassignments": moves.get(h.id, [])}
        for h in session.exec(select(Handoff).where(Handoff.lead_id == lead.id).order_by(Handoff.id.desc())).scalars()
    ]
    summary["deals"] = [
        {"outcome": d.outcome, "kind": d.kind, "amount": d.amount, "margin": d.margin, "reason": d.reason, "note": d.note,
         "by": d.by, "closed_at": d.closed_at}
        for d in session.exec(select(Deal).where(Deal.lead_id == lead.id).order_by(Deal.closed_at, Deal.id)).scalars()
    ]
    summary["suppression"] = {"suppressed": lead.suppressed is not None, "reason": lead.suppressed}
    # the address's entry on the suppression list: the first reason given, where it came from, when
    summary["suppression_list"] = entry_of(session, lead.email)
    summary["emails"] = [
        {"scenario": o.scenario, "step_id": o.step_id, "template": o.template, "subject": o.subject,
         "status": o.status, "created_at": o.created_at, "sent_at": o.sent_at, "error": o.error,
         "hold_until": o.hold_until if o.status == "pending" else None, "held": o.held}
        for o in session.exec(
            select(Outbox).where(Outbox.lead_id == lead.id).order_by(Outbox.created_at.desc(), Outbox.id.desc()).limit(20)
        ).scalars()
    ]
    return summary


def fit_and_grade(scoring, profile: Mapping[str, Any]) -> tuple[int, str]:
    """The profile fit and the grade of a lead's profile (a Lead's fields, or a row's)."""
    fit = fit_points(scoring, profile)
    return fit, grade_of(scoring, fit)


def grade_all(session: Session, scoring, *, emails: Sequence[str] | None = None, batch_size: int = 1000,
              now: datetime | None = None) -> int:
    """Recompute fit and grade of these leads (`emails`), or of every lead (scoring.yaml changed); how many changed.

    A chunk at a time: its leads read in one query, graded in Python, the changed ones written in one statement.
    A lead whose grade changes may end a `grade_at_least` wait: it is woken as of `now` (default: the system
    clock, the one `relance import` stamps its rows with)."""
    now = now or SystemClock().now()
    session.flush()  # what the session holds unwritten counts (and is not lost by the expiry at the end)
    lead = Lead.__table__
    columns = (lead.c.id, lead.c.job_title, lead.c.company_revenue, lead.c.sector, lead.c.country, lead.c.fit, lead.c.grade)

    def chunks() -> Iterator[Sequence[Mapping[str, Any]]]:
        if emails is not None:
            for start in range(0, len(emails), batch_size):
                yield session.execute(select(*columns).where(lead.c.email.in_(emails[start:start + batch_size]))).mappings().all()
            return
        last_id = 0
        while rows := session.execute(select(*columns).where(lead.c.id > last_id).order_by(lead.c.id).limit(batch_size)).mappings().all():
            yield rows
            last_id = rows[-1]["id"]

    write = update(lead).where(lead.c.id == bindparam("_id")).values(fit=bindparam("_fit"), grade=bindparam("_grade"))
    changed = 0
    for rows in chunks():
        graded = [(row, *fit_and_grade(scoring, row)) for row in rows]
        moved = [{"_id": row["id"], "_fit": fit, "_grade": grade} for row, fit, grade in graded
                 if (fit, grade) != (row["fit"], row["grade"])]
        if moved:
            session.execute(write, moved)
        changed += len(moved)
        regraded = [row["id"] for row, _, grade in graded if grade != row["grade"]]
        # an import has changed these leads before: it must not wait for another's enrollments (see relance.wakes)
        wake_for_lead_changes(session, regraded, scoring=scoring, now=now, skip_locked=True)
    session.expire_all()  # Lead objects the session holds read the new grades
    return changed
