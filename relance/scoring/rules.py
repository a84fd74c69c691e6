"""Scoring rules of scoring.yaml, as pure functions: behaviour points, fit points and grade."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, Mapping
from urllib.parse import urlsplit

from relance.scoring.config import ScoringConfig


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def fit_points(config: ScoringConfig, profile: Mapping[str, Any]) -> int:
    """Profile fit: first matching job-title rule, highest revenue tier reached, sector, country."""
    fit = config.fit
    points = 0
    title = str(profile.get("job_title") or "")
    points += next((p for pattern, p in fit.job_title.items() if _regex(pattern).search(title)), 0)
    revenue = profile.get("company_revenue")
    if revenue is not None:
        points += max((tier.points for tier in fit.company_revenue if revenue >= tier.at_least), default=0)
    sector = str(profile.get("sector") or "").lower()
    points += next((p for name, p in fit.sector.items() if name.lower() == sector), 0)
    country = str(profile.get("country") or "").upper()
    points += fit.country.get(country, 0)
    return points


def grade_of(config: ScoringConfig, points: int) -> str:
    """A to C by the grade floors of scoring.yaml; below C is D."""
    for grade, floor in sorted(config.grades.items(), key=lambda item: -item[1]):
        if points >= floor:
            return grade
    return "D"


def behaviour_points(config: ScoringConfig, event_type: str, properties: Mapping[str, Any]) -> int:
    """Points an event is worth; page visits by glob on the path (`default` otherwise)."""
    rule = config.behaviour.get(event_type)
    if rule is None:
        return 0
    if isinstance(rule, int):
        return rule
    path = str(properties.get("path") or urlsplit(str(properties.get("url", ""))).path or "")
    for glob, points in rule.items():
        if glob != "default" and fnmatchcase(path, glob):
            return points
    return rule.get("default", 0)


def at_handoff_point(config: ScoringConfig, *, score: int, grade: str, events) -> bool:
    """Score and grade meet `handoff`, and (when listed) one sales-ready action happened."""
    point = config.handoff
    if not config.meets(point, score=score, grade=grade):
        return False
    if not point.sales_ready:
        return True
    for event in events:
        for action in point.sales_ready:
            if isinstance(action, str) and event.type == action:
                return True
            if not isinstance(action, str) and event.type == "page_visited":
                path = str(event.properties.get("path") or urlsplit(str(event.properties.get("url", ""))).path or "")
                if fnmatchcase(path, action.visited):
                    return True
    return False
