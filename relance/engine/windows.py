"""Moving a time into a send window (days and hours) in the lead's timezone (pure)."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from relance.scenario.model import SendWindow

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def zone(name: str | None):
    """The lead's timezone; UTC when it has none or an unknown one."""
    try:
        return ZoneInfo(name) if name else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def _hm(text: str) -> time:
    hours, minutes = (int(x) for x in text.split(":"))
    return time.max if hours == 24 else time(hours, minutes)


def into_window(when: datetime, window: SendWindow, tz: str | None) -> datetime:
    """The earliest instant at or after `when` on an allowed day, inside the hours (UTC out)."""
    tzinfo = zone(tz)
    local = when.astimezone(tzinfo)
    start_text, end_text = window.hours.split("-")
    start, end = _hm(start_text), _hm(end_text)
    for offset in range(8):
        day = (local + timedelta(days=offset)).date()
        if DAYS[day.weekday()] not in window.days:
            continue
        opens = datetime.combine(day, start, tzinfo)
        closes = datetime.combine(day, end, tzinfo)
        if offset == 0 and local >= closes:
            continue
        candidate = max(opens, local) if offset == 0 else opens
        # round-trip through UTC so a wall-clock time skipped by DST lands on a real instant
        return candidate.astimezone(timezone.utc)
    raise ValueError(f"window {window.days} {window.hours} has no open time")  # unreachable: days is non-empty
