"""Evaluating conditions against a lead and its events (pure)."""

from __future__ import annotations

from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Mapping, Sequence, assert_never
from urllib.parse import urlsplit

from relance.engine.types import EventFact, LeadFacts
from relance.scenario.model import (
    All,
    AnyCondition,
    Any_,
    Clicked,
    Downloaded,
    EventHappened,
    FieldEquals,
    GradeAtLeast,
    HasTag,
    Not,
    Opened,
    ScoreAtLeast,
    StageIn,
    TemperatureIs,
    Visited,
    grade_at_least,
)



GLOB_MARKS = ("*", "?", "[")


def is_glob(value: Any) -> bool:
    """A `where:` value with *, ? or [ is a glob pattern."""
    return isinstance(value, str) and any(mark in value for mark in GLOB_MARKS)


def property_matches(actual: Any, expected: Any) -> bool:
    """One `where:` filter: a glob matches the property's text (case-sensitive, and the property must be
    there); any other value is equality, the number 10 and the text "10" alike."""
    if is_glob(expected):
        return actual is not None and fnmatchcase(str(actual), expected)
    return same_value(actual, expected)


def same_value(actual: Any, expected: Any) -> bool:
    """Equality as `where:` and `field:` read it: the number 10 and the text "10" alike."""
    return actual == expected or str(actual) == str(expected)


def where_matches(where: Mapping[str, Any], properties: Mapping[str, Any]) -> bool:
    """Every `where:` filter matches the event's properties (triggers, conditions and the simulator use this)."""
    return all(property_matches(properties.get(key), value) for key, value in where.items())


def page_path(properties: Mapping[str, Any]) -> str:
    """The page an event is about: its `path`, else its `url`'s path (visits, behaviour points, sales-ready pages)."""
    path = properties.get("path")
    if path:
        return str(path)
    return urlsplit(str(properties.get("url", ""))).path or ""


def _matches(condition: Opened | Clicked | Downloaded | Visited | EventHappened, event: EventFact, scenario: str) -> bool:
    props = event.properties
    match condition:
        case Opened():
            return event.type == "email_opened" and props.get("scenario") == scenario and props.get("step_id") == condition.opened
        case Clicked():
            return (
                event.type == "email_clicked" and props.get("scenario") == scenario
                and props.get("step_id") == condition.clicked
                and (condition.link is None or condition.link in str(props.get("link", "")))
            )
        case Downloaded():
            return event.type == "downloaded" and props.get("asset") == condition.downloaded
        case Visited():
            return event.type == "page_visited" and fnmatchcase(page_path(props), condition.visited)
        case EventHappened():
            return event.type == condition.event and where_matches(condition.where, props)
        case _:
            assert_never(condition)


def holds(condition: AnyCondition, *, lead: LeadFacts, events: Sequence[EventFact], now: datetime, since: datetime, scenario: str) -> bool:
    """Whether the condition holds now. Event conditions count events since `since` (the
    enrollment's entry) or, with `within`, in that window; never events after `now`."""
    match condition:
        case Opened() | Clicked() | Downloaded() | Visited() | EventHappened():
            start = now - condition.within if condition.within is not None else since
            return any(start <= e.occurred_at <= now and _matches(condition, e, scenario) for e in events)
        case ScoreAtLeast():
            return lead.score >= condition.score_at_least
        case GradeAtLeast():
            return grade_at_least(lead.grade, condition.grade_at_least)
        case TemperatureIs():
            return lead.temperature == condition.temperature
        case StageIn():
            return lead.stage in condition.stage_in
        case HasTag():
            return condition.tag in lead.tags
        case FieldEquals():
            return all(same_value(lead.fields.get(k), v) for k, v in condition.field.items())
        case All():
            return all(holds(c, lead=lead, events=events, now=now, since=since, scenario=scenario) for c in condition.all)
        case Any_():
            return any(holds(c, lead=lead, events=events, now=now, since=since, scenario=scenario) for c in condition.any)
        case Not():
            return not holds(condition.not_, lead=lead, events=events, now=now, since=since, scenario=scenario)
        case _:
            assert_never(condition)


_EVENT_TYPE_OF = {Opened: "email_opened", Clicked: "email_clicked", Downloaded: "downloaded", Visited: "page_visited"}


def event_types_of(condition: AnyCondition) -> frozenset[str]:
    """Event types whose arrival may make the condition hold (ingestion wakes the waits listing them)."""
    match condition:
        case Opened() | Clicked() | Downloaded() | Visited():
            return frozenset({_EVENT_TYPE_OF[type(condition)]})
        case EventHappened():
            return frozenset({condition.event})
        case ScoreAtLeast() | GradeAtLeast() | TemperatureIs() | StageIn() | HasTag() | FieldEquals():
            return frozenset()  # the lead's state: see state_kinds_of
        case All():
            return frozenset().union(*(event_types_of(c) for c in condition.all))
        case Any_():
            return frozenset().union(*(event_types_of(c) for c in condition.any))
        case Not():
            return event_types_of(condition.not_)
        case _:
            assert_never(condition)


def state_kinds_of(condition: AnyCondition) -> frozenset[str]:
    """What of the lead's state the condition reads (score, grade, temperature, stage, tag, field): a wait
    on any of them is re-checked after every change of the lead (relance.wakes)."""
    match condition:
        case Opened() | Clicked() | Downloaded() | Visited() | EventHappened():
            return frozenset()
        case ScoreAtLeast():
            return frozenset({"score"})
        case GradeAtLeast():
            return frozenset({"grade"})
        case TemperatureIs():
            return frozenset({"temperature"})
        case StageIn():
            return frozenset({"stage"})
        case HasTag():
            return frozenset({"tag"})
        case FieldEquals():
            return frozenset({"field"})
        case All():
            return frozenset().union(*(state_kinds_of(c) for c in condition.all))
        case Any_():
            return frozenset().union(*(state_kinds_of(c) for c in condition.any))
        case Not():
            return state_kinds_of(condition.not_)
        case _:
            assert_never(condition)


def describe(condition) -> str:
    """A short text for logs and exit reasons, e.g. `stage_in [sql, customer]`."""
    data = condition.model_dump(mode="json", by_alias=True, exclude_none=True)
    return ", ".join(f"{k} {v}" for k, v in data.items() if v not in ({}, []))
