"""The one clock. Nothing in relance calls `datetime.now()` directly; tests pass a `FrozenClock`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time, always timezone-aware UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


@dataclass
class FrozenClock:
    """A clock that moves only when told to: tests and simulations skip days in microseconds."""

    current: datetime = field(default_factory=lambda: datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc))

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> datetime:
        self.current += delta
        return self.current

    def set(self, when: datetime) -> None:
        self.current = ensure_utc(when)


def ensure_utc(when: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def parse_instant(value: str) -> datetime:
    """An ISO 8601 date or date-time as UTC (naive = UTC); ValueError with a sentence otherwise."""
    try:
        return ensure_utc(datetime.fromisoformat(value.strip()))
    except (ValueError, AttributeError):
        raise ValueError(f"{value!r} is not an ISO date/time like 2026-03-01T09:00:00+01:00 or 2026-03-01") from None
    except OverflowError:  # 9999-12-31T23:00-05:00 is past the year 9999 in UTC
        raise ValueError(f"{value!r} is out of range: write a date between 2000 and 2100") from None


def instant_or_now(value: str | None, clock: Clock | None = None) -> datetime:
    """The instant `value` names (parse_instant), or the clock's now when it is not given (a tick's or a command's `now`)."""
    if value is None:
        return (clock or SystemClock()).now()
    return parse_instant(value)
