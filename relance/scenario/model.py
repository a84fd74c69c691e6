"""The scenario language as pydantic models.

Each step and each condition is a variant of a discriminated union; the YAML key that names
the variant (``send``, ``wait``, ``if``... / ``opened``, ``all``...) is the tag. Unknown keys
are errors (``extra="forbid"``), so a marketer's typo is never silently ignored.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Literal, Union, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# --------------------------------------------------------------------------- durations

_DURATION = re.compile(r"^\s*(\d+)\s*(m|h|d|w)\s*$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_PATTERN = r"^\d+(m|h|d|w)$"
MAX_DURATION = timedelta(days=3650)  # ten years: a wait ends on a date the engine and the database can hold


def parse_duration(value: Any) -> timedelta:
    """`45m`, `2h`, `3d`, `1w` -> timedelta (at most MAX_DURATION); anything else is a clear error."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and (len(match.group(1)) > 9 or int(match.group(1)) * _UNIT_SECONDS[match.group(2)] > MAX_DURATION.total_seconds()):
            raise ValueError(f"bad duration {value!r}: at most {MAX_DURATION.days}d (ten years)")
        if match and int(match.group(1)) > 0:
            return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    raise ValueError(f"bad duration {value!r}: expected a positive number and a unit, like 45m, 2h, 3d or 1w")


def format_duration(value: timedelta) -> str:
    """The shortest marketer-style spelling of a duration (`3d`, `90m`)."""
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds // 60}m"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["45m", "2h", "3d", "1w"]}),
]

MAX_POINTS = 1_000_000  # per step or rule: a bigger one is a typo; the score itself is a 64-bit column


def _points(value: Any) -> Any:
    """`+5`, `-10`, 5 -> int; a number beyond MAX_POINTS (either way) is a clear error."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,30}\s*", value):
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not abs(value) <= MAX_POINTS:
        shown = f"{value:g}" if isinstance(value, float) else f"{value:d}"
        raise ValueError(f"{shown} points is out of range: a score counts at most {MAX_POINTS:,} points either way")
    return value


Points = Annotated[
    int,
    BeforeValidator(_points),
    WithJsonSchema({"type": "integer", "minimum": -MAX_POINTS, "maximum": MAX_POINTS}),
]

Stage = Literal["lead", "mql", "sql-pending", "sql", "customer", "nurturing", "later", "disqualified"]
STAGES: tuple[str, ...] = Stage.__args__  # type: ignore[attr-defined]
Grade = Literal["A", "B", "C", "D"]
GRADE_RANK = {"A": 4, "B": 3, "C": 2, "D": 1}  # A is best; an unknown grade ranks below D


def grade_at_least(grade: str | None, floor: str) -> bool:
    """The grade is `floor` or better (A is best)."""
    return GRADE_RANK.get(grade or "", 0) >= GRADE_RANK[floor]
Temperature = Literal["hot", "warm", "cold"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
StepId = Annotated[str, Field(min_length=1, description="The id of a step of this scenario.")]
ScalarValue = Union[str, int, float, bool, None]

MACHINE_CLICK = "email_clicked_by_machine"  # a mail scanner's click, not the lead's: earns, wakes, starts nothing
EVENT_TYPES: tuple[str, ...] = (
    "form_submitted", "downloaded", "page_visited", "email_sent", "email_delivered",
    "email_opened", "email_clicked", MACHINE_CLICK, "email_bounced", "email_complained", "unsubscribed",
    "demo_requested", "trial_started", "stage_changed", "said_later",
)
_EVENT_TYPE = r"^[a-z][a-z0-9_]*$"


class Strict(BaseModel):
    """Base of every model of the language: unknown keys are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- conditions


class _EventWindow(Strict):
    within: Duration | None = Field(None, description="Only events in this window count (default: since the lead entered the scenario).")


class Opened(_EventWindow):
    opened: StepId = Field(description="The lead opened the email sent by this step.")


class Clicked(_EventWindow):
    clicked: StepId = Field(description="The lead clicked in the email sent by this step.")
    link: str | None = Field(None, description="Only clicks on links containing this substring count.")


class Downloaded(_EventWindow):
    downloaded: str = Field(min_length=1, description="The lead downloaded this asset.")


class Visited(_EventWindow):
    visited: str = Field(min_length=1, description="The lead visited a page matching this glob, like /tarifs*.")


class EventHappened(_EventWindow):
    event: str = Field(pattern=_EVENT_TYPE, description="Such an event happened (a built-in or custom event type).")
    where: dict[str, ScalarValue] = Field(default_factory=dict, description="Filters on the event's properties: a value to equal, or a glob with *, ? or [...] like /tarifs*.")


class ScoreAtLeast(Strict):
    score_at_least: Points = Field(description="The behaviour score is at least this.")


class GradeAtLeast(Strict):
    grade_at_least: Grade = Field(description="The profile-fit grade is this or better (A is best).")


class TemperatureIs(Strict):
    temperature: Temperature = Field(description="The lead's temperature (from its behaviour score).")


class StageIn(Strict):
    stage_in: list[Stage] = Field(min_length=1, description="The lead's stage is one of these.")


class HasTag(Strict):
    tag: str = Field(min_length=1, description="The lead carries this tag.")


class FieldEquals(Strict):
    field: dict[str, ScalarValue] = Field(min_length=1, description="The lead's fields have these values.")


class All(Strict):
    all: list["Condition"] = Field(min_length=1, description="Every condition holds.")


class Any_(Strict):
    any: list["Condition"] = Field(min_length=1, description="At least one condition holds.")


class Not(Strict):
    not_: "Condition" = Field(alias="not", description="The condition does not hold.")


CONDITION_TAGS: dict[str, type[Strict]] = {
    "opened": Opened,
    "clicked": Clicked,
    "downloaded": Downloaded,
    "visited": Visited,
    "event": EventHappened,
    "score_at_least": ScoreAtLeast,
    "grade_at_least": GradeAtLeast,
    "temperature": TemperatureIs,
    "stage_in": StageIn,
    "tag": HasTag,
    "field": FieldEquals,
    "all": All,
    "any": Any_,
    "not": Not,
}
EVENT_CONDITIONS = (Opened, Clicked, Downloaded, Visited, EventHappened)


def _tag_of(value: Any, tags: dict[str, type]) -> str | None:
    """The variant named by a mapping's keys (or by a model instance's class)."""
    if isinstance(value, dict):
        for key in value:
            if key in tags:
                return key
        return None
    for key, cls in tags.items():
        if isinstance(value, cls):
            return key
    return None


def condition_tag(value: Any) -> str | None:
    return _tag_of(value, CONDITION_TAGS)


# The closed union the type checker sees: every `match` over conditions ends in `assert_never`.
AnyCondition = Union[Opened, Clicked, Downloaded, Visited, EventHappened, ScoreAtLeast, GradeAtLeast, TemperatureIs,
                     StageIn, HasTag, FieldEquals, All, Any_, Not]
assert set(get_args(AnyCondition)) == set(CONDITION_TAGS.values()), "AnyCondition and CONDITION_TAGS must list the same kinds"

_Condition = Annotated[
    Union[tuple(Annotated[cls, Tag(tag)] for tag, cls in CONDITION_TAGS.items())],  # type: ignore[misc]
    Discriminator(
        condition_tag,
        custom_error_type="unknown_condition",
        custom_error_message="not a condition: expected one of " + ", ".join(CONDITION_TAGS),
    ),
]
if TYPE_CHECKING:
    Condition = AnyCondition
else:
    Condition = _Condition
for _model in (All, Any_, Not):
    _model.model_rebuild()


def nested(condition: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every condition of a tree, itself first then depth-first in the order written, each with its YAML path under
    `path` (the one walker: validation, the simulator's targets and the tick's event reads use it)."""
    yield condition, path
    if isinstance(condition, All):
        for index, inner in enumerate(condition.all):
            yield from nested(inner, (*path, "all", index))
    elif isinstance(condition, Any_):
        for index, inner in enumerate(condition.any):
            yield from nested(inner, (*path, "any", index))
    elif isinstance(condition, Not):
        yield from nested(condition.not_, (*path, "not"))


# --------------------------------------------------------------------------- steps


class BaseStep(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.?!-]*$", description="Unique id of the step in this scenario.")
    next: StepId | None = Field(None, description="The step to go to afterwards (default: the following one).")


class Send(BaseStep):
    send: str = Field(min_length=1, description="Template name: templates/emails/NAME.mjml.")
    subject: str = Field(min_length=1, description="Subject line (Jinja2, e.g. {{ lead.first_name }}).")
    from_: str | None = Field(None, alias="from", description="Sender, overriding RELANCE_FROM.")
    reply_to: str | None = Field(None, description="Reply-To address.")
    preheader: str | None = Field(None, description="Preview text shown after the subject in inboxes.")
    transactional: str | None = Field(None, min_length=3, max_length=200, description=(
        "Why this email is not marketing (e.g. 'the white paper the lead asked for'): sending.yaml's caps and quiet "
        "hours do not hold it back. Absent: marketing, like the scenario."))


class SendWindow(Strict):
    days: list[Day] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"], min_length=1)
    hours: str = Field("09:00-18:00", pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$", description="HH:MM-HH:MM in the lead's timezone.")

    @field_validator("hours")
    @classmethod
    def _hours_in_order(cls, value: str) -> str:
        start, end = value.split("-")
        for part in (start, end):
            hh, mm = (int(x) for x in part.split(":"))
            if hh > 24 or mm > 59 or (hh == 24 and mm):
                raise ValueError(f"bad time {part!r} in hours {value!r}")
        if start >= end:
            raise ValueError(f"hours {value!r}: the window must end after it starts")
        return value


class Wait(BaseStep):
    wait: Duration = Field(description="How long to pause: 45m, 2h, 3d, 1w.")
    window: SendWindow | None = Field(None, description="Move the end of the pause into this window (lead's timezone).")


class WaitUntil(BaseStep):
    wait_until: Condition = Field(description="Continue as soon as this holds.")
    timeout: Duration = Field(description="Give up waiting after this long.")
    on_timeout: StepId | None = Field(None, description="Where to go on timeout (default: the following step).")


class If(BaseStep):
    if_: Condition = Field(alias="if", description="The condition to test now.")
    then: StepId | None = Field(None, description="Where to go when it holds (default: the following step).")
    else_: StepId | None = Field(None, alias="else", description="Where to go when it does not (default: the following step).")

    @model_validator(mode="after")
    def _one_branch(self) -> "If":
        if self.then is None and self.else_ is None:
            raise ValueError("an if step needs `then:` or `else:` (or both)")
        return self


class Score(BaseStep):
    score: Points = Field(description="Points to add (+N) or remove (-N).")

    @field_validator("score")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("score: +0 changes nothing; write +N or -N")
        return value


class SetAction(Strict):
    stage: Stage | None = Field(None, description="Move the lead to this stage.")
    field: dict[str, ScalarValue] | None = Field(None, description="Set these profile fields.")
    tag: str | list[str] | None = Field(None, description="Add this tag (or these tags).")

    @model_validator(mode="after")
    def _something(self) -> "SetAction":
        if self.stage is None and not self.field and not self.tag:
            raise ValueError("set needs at least one of stage, field, tag")
        return self


class SetStep(BaseStep):
    set: SetAction = Field(description="Change the lead: stage, fields, tags.")


class Handoff(BaseStep):
    handoff: Literal["sales"] = Field(description="Hand the lead to sales if it is at the handoff point.")
    owner: str | None = Field(None, description="Sales owner (default: round-robin over the team).")
    team: str | None = Field(None, description="Sales team.")


class NotifyAction(Strict):
    email: str | None = Field(None, description="Address to tell.")
    template: str | None = Field(None, description="Template of the notification email.")
    subject: str | None = Field(None, description="Subject of the notification email.")
    webhook: str | None = Field(None, pattern=r"^https?://", description="URL to POST the lead to.")

    @field_validator("webhook")
    @classmethod
    def _callable_url(cls, url: str | None) -> str | None:
        if url is not None and (why := webhook_url_problem(url)):
            raise ValueError(f"`webhook: {url}` is not a web address relance can call: {why}")
        return url

    @model_validator(mode="after")
    def _target(self) -> "NotifyAction":
        if not self.email and not self.webhook:
            raise ValueError("notify needs `email:` or `webhook:`")
        if self.email and self.webhook:
            raise ValueError("notify takes `email:` or `webhook:`, not both: write one notify step for each")
        if self.webhook and (self.template or self.subject):
            raise ValueError("`template:` and `subject:` are for `email:`; a webhook receives the lead as JSON")
        return self


_PORT = "its port is not a number from 1 to 65535"
_WEB_HOST = re.compile(r"^(?=.{1,253}$)[\w-]+(\.[\w-]+)*\.?$")


def webhook_url_problem(url: str) -> str | None:
    """What makes an http(s) URL one no POST can be made to (None: it can be tried)."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "it contains a space or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError as exc:
        return _PORT if "port" in str(exc).lower() else "the address between [ ] is not a valid IPv6 address"
    host = parts.hostname or ""
    if not host:
        return "it names no host (write https://HOST/PATH)"
    if ":" not in host and not _WEB_HOST.match(host):  # an IPv6 address was checked by urlsplit
        return f"{host!r} is not a host name"
    if parts.port == 0:
        return _PORT
    return None


class Notify(BaseStep):
    notify: NotifyAction = Field(description="Tell a person or a system.")


class Split(BaseStep):
    """Random A/B split, sticky per lead: `split: {a: 50, b: 50}` then one `a:` / `b:` key per variant."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    split: dict[str, Annotated[int, Field(gt=0)]] = Field(min_length=2, description="Variant name -> weight.")

    @model_validator(mode="after")
    def _branches_match_variants(self) -> "Split":
        extra = dict(self.model_extra or {})
        unknown = sorted(set(extra) - set(self.split))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}: a split step takes one key per variant ({', '.join(self.split)})")
        missing = [name for name in self.split if name not in extra]
        if missing:
            raise ValueError(f"split variant {missing[0]!r} has no target step: add `{missing[0]}: STEP_ID`")
        for name, target in extra.items():
            if not isinstance(target, str) or not target:
                raise ValueError(f"split variant {name!r} must name a step id")
        return self

    @property
    def branches(self) -> dict[str, str]:
        """Variant name -> target step id."""
        return {name: str((self.model_extra or {})[name]) for name in self.split}


class Enroll(BaseStep):
    enroll: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Move the lead into this scenario and end this one.")


class End(BaseStep):
    end: Literal[True] = Field(description="Leave the scenario.")


STEP_TAGS: dict[str, type[BaseStep]] = {
    "send": Send,
    "wait": Wait,
    "wait_until": WaitUntil,
    "if": If,
    "score": Score,
    "set": SetStep,
    "handoff": Handoff,
    "notify": Notify,
    "split": Split,
    "enroll": Enroll,
    "end": End,
}


def step_tag(value: Any) -> str | None:
    return _tag_of(value, STEP_TAGS)


# The closed union the type checker sees: every `match` over steps ends in `assert_never`. A new kind of step
# is a class here, its tag in STEP_TAGS, its edges in relance.scenario.plan, its behaviour in the interpreter
# (docs/architecture.md).
AnyStep = Union[Send, Wait, WaitUntil, If, Score, SetStep, Handoff, Notify, Split, Enroll, End]
assert set(get_args(AnyStep)) == set(STEP_TAGS.values()), "AnyStep and STEP_TAGS must list the same kinds"

_Step = Annotated[
    Union[tuple(Annotated[cls, Tag(tag)] for tag, cls in STEP_TAGS.items())],  # type: ignore[misc]
    Discriminator(
        step_tag,
        custom_error_type="unknown_step",
        custom_error_message="not a step: expected one of the keys " + ", ".join(STEP_TAGS),
    ),
]
if TYPE_CHECKING:
    Step = AnyStep
else:
    Step = _Step


# --------------------------------------------------------------------------- scenario


class EventTrigger(Strict):
    event: str = Field(pattern=_EVENT_TYPE, description="Enroll a lead when this event happens (said_later: on the re-engage date).")
    where: dict[str, ScalarValue] = Field(default_factory=dict, description="Filters on the event's properties: a value to equal, or a glob with *, ? or [...] like /tarifs*.")


class SegmentTrigger(Strict):
    segment: Condition = Field(description="Enroll any lead matching this, checked each tick.")


Trigger = Annotated[
    Union[Annotated[EventTrigger, Tag("event")], Annotated[SegmentTrigger, Tag("segment")]],
    Discriminator(
        lambda v: _tag_of(v, {"event": EventTrigger, "segment": SegmentTrigger}),
        custom_error_type="unknown_trigger",
        custom_error_message="a trigger is either {event: TYPE} or {segment: CONDITION}",
    ),
]


class ReentryAfter(Strict):
    after: Duration = Field(description="A lead may enter again this long after it last entered.")


Reentry = Union[Literal["never", "always"], ReentryAfter]


DEFAULT_PRIORITY = 50
_CRON = re.compile(r"^\s*[0-9A-Za-z*?/,#-]+(\s+[0-9A-Za-z*?/,#-]+){4}\s*$")
MIN_SCHEDULE = timedelta(minutes=1)


class CronSchedule(Strict):
    cron: str = Field(description="Five cron fields (minute hour day-of-month month day-of-week), e.g. '*/5 8-19 * * mon-fri'.")
    timezone: str | None = Field(None, description="The time zone the cron reads in (IANA, e.g. Europe/Paris); default UTC.")

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if not _CRON.match(value):
            raise ValueError(f"bad cron {value!r}: expected five fields (minute hour day month weekday), like '0 9 * * mon-fri'")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}: expected an IANA name such as Europe/Paris") from None
        return value


def _every(value: Any) -> timedelta:
    """A schedule's duration: at least a minute (Prefect's scheduler would not keep up with less)."""
    every = parse_duration(value)
    if every < MIN_SCHEDULE:
        raise ValueError("a tick runs at most once a minute: the schedule must be 1m or more")
    return every


Every = Annotated[timedelta, BeforeValidator(_every), PlainSerializer(format_duration, return_type=str),
                  WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["10m", "1h"]})]
TickSchedule = Annotated[
    Union[Annotated[Every, Tag("every")], Annotated[CronSchedule, Tag("cron")]],
    Discriminator(
        lambda v: "cron" if isinstance(v, (dict, CronSchedule)) else "every" if isinstance(v, (str, timedelta)) else None,
        custom_error_type="bad_schedule",
        custom_error_message="a schedule is a duration (10m, 1h) or {cron: '0 9 * * mon-fri', timezone: Europe/Paris}",
    ),
]


class Scenario(Strict):
    scenario: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Id: lowercase letters, digits, dashes.")
    description: str | None = None
    trigger: Trigger
    reentry: Reentry = Field("never", description="never (default) | always | {after: 90d}")
    exit_when: list[Condition] = Field(default_factory=list, description="Goals checked before every step; any one ends the scenario.")
    steps: list[Step] = Field(min_length=1)
    priority: int | None = Field(None, ge=0, le=100, description=(
        "0-100, default 50: when sending.yaml's caps leave room for fewer emails than the scenarios want to send a lead, "
        "the higher priority goes first."))
    held: Literal["wait", "skip"] | None = Field(None, description=(
        "An email sending.yaml holds back (cap, quiet hours, blackout): wait (default) for the next allowed moment, or skip it."))
    transactional: str | None = Field(None, min_length=3, max_length=200, description=(
        "Why this scenario's emails are not marketing (e.g. 'order confirmations'): caps and quiet hours do not hold them back."))
    newsletter: bool | None = Field(None, description=(
        "true: this scenario is the newsletter; a lead who chose 'only the newsletter' on the unsubscribe page still gets it."))
    schedule: TickSchedule | None = Field(None, description=(
        "How often the scenario's tick runs on the Prefect server besides the events that wake it: a duration "
        "(10m, the default; 1h) or {cron: '0 9 * * mon-fri', timezone: Europe/Paris}."))

    @property
    def name(self) -> str:
        return self.scenario

    @property
    def rank(self) -> int:
        """The priority, 50 when the file gives none."""
        return DEFAULT_PRIORITY if self.priority is None else self.priority
