"""Synthetic engagement: what a lead does after an email, drawn from `EngagementRates`.

Only reactions a scenario can notice are drawn: downloads of the assets its conditions name,
visits of the pages they name, the other event types they wait for. Opens, clicks and
unsubscribes are always drawn (exit goals and scoring read them).
"""

from __future__ import annotations

import fnmatch
import random
import re
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta
from typing import Any, Iterator, Mapping, assert_never

from relance.engine.conditions import is_glob, where_matches
from relance.engine.types import EventFact
from relance.scenario.model import (
    All,
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
    nested,
)
from relance.scenario.plan import Plan, step_conditions
from relance.simulation.rates import EngagementRates

GENERIC_LINK = "https://www.example.com/"
# Event types the engagement model draws itself, never as "other events".
_OWN_TYPES = {"downloaded", "page_visited", "unsubscribed"}


def conditions_of(plan: Plan) -> Iterator[Any]:
    """Every condition of a plan's steps and exit goals, nested ones included."""
    roots: list[Any] = list(plan.scenario.exit_when)
    for step in plan.steps.values():
        roots.extend(step_conditions(step).values())
    for root in roots:
        yield from (condition for condition, _path in nested(root))


def page_for(glob: str) -> str:
    """A concrete value matching a glob (`/tarifs*` -> `/tarifs`), for `visited` and `where:` alike."""
    path = re.sub(r"\[!?([^\]])[^\]]*\]", r"\1", glob).replace("*", "").replace("?", "x")
    return path if fnmatch.fnmatchcase(path, glob) else glob


def example_properties(where: Mapping[str, Any]) -> dict[str, Any]:
    """Properties of an event the `where:` filters accept: each glob replaced by a value it matches."""
    example = {key: page_for(value) if is_glob(value) else value for key, value in where.items()}
    return example if where_matches(where, example) else dict(where)


@dataclass(frozen=True)
class Targets:
    """What a scenario's conditions look for, as event properties a reaction can carry."""

    downloads: tuple[Mapping[str, Any], ...] = ()
    visits: tuple[Mapping[str, Any], ...] = ()
    others: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    links: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # send step id -> links to pick from

    @classmethod
    def of(cls, plan: Plan) -> "Targets":
        downloads: list[dict[str, Any]] = []
        visits: list[dict[str, Any]] = []
        others: list[tuple[str, dict[str, Any]]] = []
        links: dict[str, list[str]] = {}
        for condition in conditions_of(plan):
            match condition:
                case Downloaded():
                    _add(downloads, {"asset": condition.downloaded})
                case Visited():
                    _add(visits, {"path": page_for(condition.visited)})
                case Clicked() if condition.link:
                    _add(links.setdefault(condition.clicked, [GENERIC_LINK]), _url_with(condition.link))
                case EventHappened(event="downloaded"):
                    _add(downloads, example_properties(condition.where) or {"asset": "asset"})
                case EventHappened(event="page_visited"):
                    _add(visits, example_properties(condition.where) or {"path": "/"})
                case EventHappened() if condition.event not in _OWN_TYPES and not condition.event.startswith("email_"):
                    _add(others, (condition.event, example_properties(condition.where)))
                case (Opened() | Clicked() | EventHappened() | ScoreAtLeast() | GradeAtLeast() | TemperatureIs()
                      | StageIn() | HasTag() | FieldEquals() | All() | Any_() | Not()):
                    pass  # no reaction to draw for it (nested conditions come on their own from conditions_of)
                case _:
                    assert_never(condition)
        return cls(
            downloads=tuple(downloads), visits=tuple(visits), others=tuple(others),
            links={step: tuple(urls) for step, urls in links.items()},
        )


def _add(items: list, item: Any) -> None:
    if item not in items:
        items.append(item)


def _url_with(link: str) -> str:
    return link if "://" in link else GENERIC_LINK + link.lstrip("/")


@dataclass(frozen=True)
class Engagement:
    """Draws the reactions to one sent email; the same random stream gives the same reactions."""

    scenario: str
    rates: EngagementRates
    targets: Targets

    @cached_property
    def _actions(self) -> tuple[tuple[float, tuple[tuple[str, Mapping[str, Any]], ...]], ...]:
        """(rate, the events it may produce) for downloads, visits and other events."""
        return (
            (self.rates.download_rate, tuple(("downloaded", p) for p in self.targets.downloads)),
            (self.rates.visit_rate, tuple(("page_visited", p) for p in self.targets.visits)),
            (self.rates.event_rate, self.targets.others),
        )

    def reactions(self, *, step_id: str, enrollment_id: int, sent_at: datetime, rng: random.Random) -> list[EventFact]:
        """The events a lead produces after this email, each at its own time (unsorted)."""
        rates = self.rates
        email = {"scenario": self.scenario, "step_id": step_id, "enrollment_id": enrollment_id}
        events: list[EventFact] = []
        if rng.random() < rates.open_rate:
            opened = sent_at + _hours(rng, rates.open_delay_hours)
            events.append(EventFact("email_opened", opened, email))
            if rng.random() < rates.click_given_open:
                link = rng.choice(self.targets.links.get(step_id, (GENERIC_LINK,)))
                events.append(EventFact("email_clicked", opened + _hours(rng, rates.click_delay_hours), {**email, "link": link}))
        if rng.random() < rates.unsubscribe_rate:
            events.append(EventFact("unsubscribed", sent_at + _hours(rng, rates.action_delay_hours), email))
        for rate, choices in self._actions:
            if choices and rng.random() < rate:
                kind, properties = rng.choice(choices)
                events.append(EventFact(kind, sent_at + _hours(rng, rates.action_delay_hours), dict(properties)))
        return events


def _hours(rng: random.Random, mean: float) -> timedelta:
    return timedelta(hours=rng.expovariate(1.0 / mean))

