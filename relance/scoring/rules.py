"""Scoring rules of scoring.yaml, as pure functions: behaviour points, fit points and grade."""

from __future__ import annotations

import re
from datetime import datetime
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, Mapping

from relance.engine.conditions import page_path
from relance.engine.types import NotReady
from relance.scenario.model import grade_at_least
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
    """Points an event is worth; page visits by glob on the path (`default` otherwise). The one matcher: ingestion
    and the simulator both score with it."""
    rule = config.behaviour.get(event_type)
    if rule is None:
        return 0
    if isinstance(rule, int):
        return rule
    path = page_path(properties)
    for glob, points in rule.items():
        if glob != "default" and fnmatchcase(path, glob):
            return points
    return rule.get("default", 0)


def is_sales_ready(config: ScoringConfig, event) -> bool:
    """The event is one of `handoff.sales_ready` (an event type, or a visit of a page matching the glob)."""
    for action in config.handoff.sales_ready:
        if isinstance(action, str) and event.type == action:
            return True
        if not isinstance(action, str) and event.type == "page_visited":
            if fnmatchcase(page_path(event.properties), action.visited):
                return True
    return False


def at_handoff_point(config: ScoringConfig, *, score: int, grade: str, events, since: datetime | None = None) -> bool:
    """Score and grade meet `handoff`, and (when listed) one sales-ready action happened (after `since`, the last
    rejection by sales, when given: an action sales has already turned down does not count again)."""
    return handoff_shortfall(config, score=score, grade=grade, events=events, since=since) is None


def handoff_shortfall(config: ScoringConfig, *, score: int, grade: str, events,
                      since: datetime | None = None) -> NotReady | None:
    """What keeps a lead from the hand-off point (`at_handoff_point`), every unmet rule of `handoff` in one NotReady
    (`score 29 < 60 and grade C < B`); None when it is there."""
    point = config.handoff
    missing: list[tuple[str, str]] = []
    if score < point.score_at_least:
        missing.append((f"score {score} < {point.score_at_least}", f"score below {point.score_at_least}"))
    if not grade_at_least(grade, point.grade_at_least):
        missing.append((f"grade {grade or 'none'} < {point.grade_at_least}",) * 2)  # few grades: counted as they are
    if not missing and point.sales_ready and not any(
            is_sales_ready(config, e) for e in events if since is None or e.occurred_at > since):
        words = "no sales-ready action" + (" since the last rejection" if since is not None else "")
        missing.append((words, words))
    if not missing:
        return None
    return NotReady(why=" and ".join(w for w, _ in missing), reason=" and ".join(r for _, r in missing))


def team_for(config: ScoringConfig, profile: Mapping[str, Any]) -> str | None:
    """The first team of `sales.teams` (file order) whose `where` the lead's profile matches."""
    for name, team in config.sales.teams.items():
        if team.where is not None and _matches(team.where, profile):
            return name
    return None


def _matches(where, profile: Mapping[str, Any]) -> bool:
    for field in ("country", "sector", "language"):
        wanted = getattr(where, field)
        if wanted is not None:
            values = [wanted] if isinstance(wanted, str) else wanted
            if str(profile.get(field) or "").casefold() not in {v.casefold() for v in values}:
                return False
    if where.company_revenue is not None:
        revenue = profile.get("company_revenue")
        if revenue is None or revenue < where.company_revenue.at_least:
            return False
    return True
