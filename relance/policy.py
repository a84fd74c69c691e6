"""`scenarios/sending.yaml`, the account's sending policy, and when it lets a marketing email go (pure).

The policy caps marketing email per lead over rolling windows (across every scenario), keeps quiet hours and quiet
days in the lead's own time zone, and keeps blackout dates. `hold` answers, for one email at one instant, either
None (it may go now) or a `Hold`: the earliest instant it may go and why, in words. Transactional email (a scenario
or step that declares `transactional:`) and staff mail are never held. `relance.gate` applies it at send time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from relance.scenario.model import Day, Duration, Strict, format_duration

DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TIMEZONE = "Europe/Paris"
_SEARCH_LIMIT = 400  # steps of the search for an allowed instant; each step clears a whole rule, so 400 covers a year of blackouts


class Cap(Strict):
    emails: int = Field(ge=1, le=1000, description="At most this many marketing emails to one lead ...")
    per: Duration = Field(description="... in any window this long (rolling: 1d, 7d, 30d).")

    @field_validator("per")
    @classmethod
    def _at_least_an_hour(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1):
            raise ValueError(f"per {format_duration(value)}: a cap's window is at least 1h")
        return value

    def words(self) -> str:
        return f"{self.emails} per {format_duration(self.per)}"


class Quiet(Strict):
    hours: str | None = Field(None, pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$", description=(
        "HH:MM-HH:MM in the lead's time zone when nothing is sent; may run past midnight (20:00-08:00)."))
    days: list[Day] = Field(default_factory=list, description="Days nothing is sent (lead's time zone), e.g. [sat, sun].")

    @field_validator("hours")
    @classmethod
    def _real_times(cls, value: str | None) -> str | None:
        if value is None:
            return value
        start, end = value.split("-")
        for part in (start, end):
            hh, mm = (int(x) for x in part.split(":"))
            if hh > 23 or mm > 59:
                raise ValueError(f"bad time {part!r} in quiet hours {value!r} (00:00 to 23:59)")
        if start == end:
            raise ValueError(f"quiet hours {value!r} start and end at the same time: that leaves no time to send")
        return value

    @field_validator("days")
    @classmethod
    def _some_day_left(cls, value: list[Day]) -> list[Day]:
        if set(value) >= set(DAYS):
            raise ValueError("every day is quiet: that leaves no day to send")
        return value


class Span(Strict):
    from_: date = Field(alias="from", description="First blackout day (lead's time zone).")
    to: date = Field(description="Last blackout day, included.")

    @model_validator(mode="after")
    def _in_order(self) -> "Span":
        if self.to < self.from_:
            raise ValueError(f"blackout from {self.from_} to {self.to}: the end comes before the start")
        if (self.to - self.from_).days > 60:
            raise ValueError(f"blackout from {self.from_} to {self.to}: longer than 60 days (pause the scenarios instead)")
        return self


Blackout = Union[date, Span]


class SendingPolicy(Strict):
    """What sending.yaml says; an absent file is the empty policy (nothing held back)."""

    caps: list[Cap] = Field(default_factory=list, description="Marketing emails per lead, counted over every scenario.")
    quiet: Quiet = Field(default_factory=Quiet, description="When nothing is sent, in the lead's time zone.")
    blackout: list[Blackout] = Field(default_factory=list, description="Dates nothing is sent: 2026-12-25 or {from: .., to: ..}.")
    timezone: str = Field(DEFAULT_TIMEZONE, description="Time zone of leads that have none (or an unknown one).")
    held: Literal["wait", "skip"] = Field("wait", description=(
        "An email held back waits for the next allowed moment (wait) or is skipped (skip); a scenario's `held:` overrides."))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris or America/New_York)") from None
        return value

    @property
    def holds_anything(self) -> bool:
        return bool(self.caps or self.quiet.hours or self.quiet.days or self.blackout)

    @property
    def longest_window(self) -> timedelta:
        return max((cap.per for cap in self.caps), default=timedelta(0))


NO_POLICY = SendingPolicy()


def sending_json_schema() -> dict:
    """sending.yaml's JSON Schema, for editors (`relance schema --sending`)."""
    from relance.scenario.schema import SCHEMA_DIALECT

    schema = SendingPolicy.model_json_schema(by_alias=True)
    return {"$schema": SCHEMA_DIALECT, "title": "relance sending policy", **{k: v for k, v in schema.items() if k != "title"}}


@dataclass(frozen=True)
class Hold:
    """Not now: the earliest instant the email may go (UTC), and why it may not go now, in words."""

    until: datetime
    reason: str

    @property
    def kind(self) -> str:
        """cap, quiet hours, quiet day, blackout or priority: what the report groups by."""
        return self.reason.split(":", 1)[0]


def zone_of(policy: SendingPolicy, name: str | None):
    """The lead's time zone; the policy's default when it has none or an unknown one."""
    for candidate in (name, policy.timezone):
        try:
            if candidate:
                return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return timezone.utc


def _hm(text: str) -> time:
    hours, minutes = (int(x) for x in text.split(":"))
    return time(hours, minutes)


def _blacked_out(policy: SendingPolicy, day: date) -> bool:
    return any(day == b if isinstance(b, date) else b.from_ <= day <= b.to for b in policy.blackout)


def _closed(policy: SendingPolicy, local: datetime) -> tuple[str, datetime] | None:
    """Why nothing may go at this local instant and the local instant that rule ends, or None when it is open."""
    day = local.date()
    next_day = datetime.combine(day + timedelta(days=1), time(0), local.tzinfo)
    if _blacked_out(policy, day):
        return f"blackout: {day.isoformat()}", next_day
    if DAYS[day.weekday()] in policy.quiet.days:
        return f"quiet day: {DAYS[day.weekday()]}", next_day
    if policy.quiet.hours:
        start_text, end_text = policy.quiet.hours.split("-")
        start, end, now = _hm(start_text), _hm(end_text), local.time().replace(tzinfo=None)
        if start < end and start <= now < end:
            return f"quiet hours: {policy.quiet.hours}", datetime.combine(day, end, local.tzinfo)
        if start > end and (now >= start or now < end):  # runs past midnight
            ends_on = day + timedelta(days=1) if now >= start else day
            return f"quiet hours: {policy.quiet.hours}", datetime.combine(ends_on, end, local.tzinfo)
    return None


def _inside(cap: Cap, at: datetime, sent: list[datetime]) -> list[datetime]:
    return sorted(t for t in sent if t > at - cap.per)


def _cap_frees(policy: SendingPolicy, at: datetime, sent: list[datetime]) -> tuple[str, datetime] | None:
    """The first cap already full at `at` and when it has room again (its oldest send in the window leaves), or None."""
    for cap in policy.caps:
        inside = _inside(cap, at, sent)
        if len(inside) >= cap.emails:
            return f"cap: {cap.words()}", inside[len(inside) - cap.emails] + cap.per
    return None


def hold(policy: SendingPolicy, *, now: datetime, tz: str | None, sent: list[datetime], ahead: int = 0) -> Hold | None:
    """None when a marketing email may go at `now`; else the earliest instant it may and why not now.

    `sent`: when this lead's marketing emails that count were sent (those not older than the longest cap will do);
    `ahead`: emails to this lead ready to go now that come first (higher priority, or written earlier). When they
    would fill a cap, this one yields until the next run (`until` is `now`): they go, and it is then held by the cap."""
    zone = zone_of(policy, tz)
    at, reason = now, None
    for _ in range(_SEARCH_LIMIT):
        closed = _closed(policy, at.astimezone(zone))
        if closed is not None:
            why, ends = closed
            if why.startswith("quiet"):
                why = f"{why} ({getattr(zone, 'key', 'UTC')})"
            later = ends.astimezone(timezone.utc)
            at = later if later > at else at + timedelta(minutes=1)  # a wall-clock end inside a DST fold: step on
        elif (full := _cap_frees(policy, at, sent)) is not None:
            why, at = full
        else:
            break
        reason = reason or why
    else:
        raise ValueError("sending.yaml leaves no moment to send within a year")  # validation leaves open days: unreachable
    if reason is not None:
        return Hold(at, reason)
    for cap in policy.caps:
        if ahead and len(_inside(cap, now, sent)) + ahead >= cap.emails:
            return Hold(now, f"priority: {cap.words()}, and {ahead} email(s) of higher priority go first")
    return None
