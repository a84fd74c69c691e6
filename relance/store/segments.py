"""SQL that narrows a segment tick to the leads that may enter.

The exact test stays in Python (`relance.engine.conditions.holds`, `relance.engine.triggers.may_enter`).
These clauses are only *necessary* conditions of it, so a tick never reads a lead that cannot
match or may not enter again: a monthly newsletter over a million leads reads the few that can
enter now, not the million.
"""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

from sqlalchemy import ColumnElement, and_, exists, or_, true

from relance.scenario.model import (
    GRADE_RANK,
    All,
    Any_,
    AnyCondition,
    Clicked,
    Downloaded,
    EventHappened,
    FieldEquals,
    GradeAtLeast,
    HasTag,
    Not,
    Opened,
    ReentryAfter,
    ScoreAtLeast,
    StageIn,
    TemperatureIs,
    Visited,
)
from relance.store.tables import Enrollment, Lead


def narrowing(condition: AnyCondition) -> ColumnElement[bool] | None:
    """A clause every lead matching `condition` satisfies, or None when SQL cannot say (events, tags, fields...)."""
    match condition:
        case StageIn():
            return Lead.stage.in_(condition.stage_in)
        case GradeAtLeast():
            least = GRADE_RANK[condition.grade_at_least]
            return Lead.grade.in_([grade for grade, rank in GRADE_RANK.items() if rank >= least])
        case ScoreAtLeast():
            return Lead.score >= condition.score_at_least
        case All():
            parts = [part for part in map(narrowing, condition.all) if part is not None]
            return and_(*parts) if parts else None
        case Any_():
            parts = [narrowing(part) for part in condition.any]
            return or_(*parts) if all(part is not None for part in parts) else None
        case (Opened() | Clicked() | Downloaded() | Visited() | EventHappened() | TemperatureIs() | HasTag()
              | FieldEquals() | Not()):
            return None  # SQL cannot say (a `not` of a necessary condition is none)
        case _:
            assert_never(condition)


def may_enter_again(scenario: str, reentry, now: datetime) -> ColumnElement[bool]:
    """Leads whose past enrollments in `scenario` let them in now (see `may_enter`)."""
    if reentry == "never":
        blocking = true()
    elif isinstance(reentry, ReentryAfter):
        blocking = or_(Enrollment.status == "active", Enrollment.entered_at > now - reentry.after)
    else:  # always: anyone not inside
        blocking = Enrollment.status == "active"
    return ~exists().where(Enrollment.lead_id == Lead.id, Enrollment.scenario == scenario, blocking)
