"""Who enters a scenario: event triggers and re-entry rules (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from relance.engine.conditions import where_matches
from relance.engine.types import EventFact
from relance.scenario.model import EventTrigger, ReentryAfter


def event_triggers(trigger: EventTrigger, event: EventFact) -> bool:
    """The event is of the trigger's type and its properties match the `where` filters (globs included)."""
    return event.type == trigger.event and where_matches(trigger.where, event.properties)


def may_enter(reentry, *, previous_entries: Sequence[datetime], active: bool, now: datetime) -> bool:
    """never: only once; always: whenever not inside; {after: D}: D after the last entry."""
    if active:
        return False
    if not previous_entries:
        return True
    if reentry == "always":
        return True
    if isinstance(reentry, ReentryAfter):
        return max(previous_entries) + reentry.after <= now
    return False
