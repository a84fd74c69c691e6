"""Who enters a scenario: event triggers and re-entry rules (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from relance.engine.types import EventFact
from relance.scenario.model import EventTrigger, ReentryAfter


def event_triggers(trigger: EventTrigger, event: EventFact) -> bool:
    """The event is of the trigger's type and its properties equal the `where` filters."""
    return event.type == trigger.event and all(
        event.properties.get(k) == v or str(event.properties.get(k)) == str(v) for k, v in trigger.where.items()
    )


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
