"""`scenarios/scoring.yaml` as a pydantic model: points, fit, grades, thresholds, SLA."""

from __future__ import annotations

from datetime import timedelta
from typing import Union

from pydantic import Field, StrictBool, field_validator

from relance.scenario.model import MACHINE_CLICK, Duration, Grade, Points, Strict, Visited, grade_at_least


class RevenueTier(Strict):
    at_least: int = Field(ge=0)
    points: Points


class Fit(Strict):
    job_title: dict[str, Points] = Field(default_factory=dict, description="Regex -> points (first match wins).")
    company_revenue: list[RevenueTier] = Field(default_factory=list, description="Highest tier reached wins.")
    sector: dict[str, Points] = Field(default_factory=dict)
    country: dict[str, Points] = Field(default_factory=dict)


class Decay(Strict):
    every: Duration
    percent: int = Field(gt=0, le=100)


class Threshold(Strict):
    score_at_least: Points = 0
    grade_at_least: Grade = "D"


class HandoffPoint(Threshold):
    sales_ready: list[Union[str, Visited]] = Field(default_factory=list, description="Events (or page visits) that show a lead is ready for sales.")
    after_rejection: Duration = Field(timedelta(days=30), description="Cool-off after sales rejects a lead: no automatic hand-off meanwhile.")


class Sla(Strict):
    contact_within: Duration
    target: Duration
    alert_on_target: StrictBool = Field(False, description="Email the owner once when the target passes unanswered.")


class Later(Strict):
    default_delay: Duration
    scenario: str


class RevenueAtLeast(Strict):
    at_least: int = Field(ge=0)


OneOrMany = Union[str, list[str]]


class Where(Strict):
    """Profile fields a team's leads have: a value or a list of values (any of them), all fields at once."""

    country: OneOrMany | None = None
    sector: OneOrMany | None = None
    language: OneOrMany | None = None
    company_revenue: RevenueAtLeast | None = None

    @field_validator("company_revenue", mode="before")
    @classmethod
    def _at_least(cls, value):
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"`company_revenue:` takes a floor, like {{at_least: 1000000}} (got {value!r})")
        return value


class Team(Strict):
    owners: list[str] = Field(description="Round-robin inside the team.")
    where: Where | None = Field(None, description="Which leads the team takes (absent: only a step's `team:` reaches it).")

    @field_validator("owners")
    @classmethod
    def _someone(cls, owners: list[str]) -> list[str]:
        if not owners:
            raise ValueError("a team needs at least one owner (an email address)")
        return owners


class Sales(Strict):
    owners: list[str] = Field(default_factory=list)
    manager: str | None = None
    teams: dict[str, Team] = Field(default_factory=dict, description="First team whose `where` matches takes the lead.")


class ScoringConfig(Strict):
    behaviour: dict[str, Union[Points, dict[str, Points]]] = Field(default_factory=dict)
    decay: Decay | None = None
    fit: Fit = Field(default_factory=Fit)
    grades: dict[Grade, Points] = Field(default_factory=lambda: {"A": 70, "B": 50, "C": 30})
    temperature: dict[str, Points] = Field(default_factory=lambda: {"hot": 60, "warm": 30})
    mql: Threshold = Field(default_factory=lambda: Threshold(score_at_least=40, grade_at_least="C"))
    handoff: HandoffPoint = Field(default_factory=lambda: HandoffPoint(score_at_least=60, grade_at_least="B"))
    sla: Sla | None = None
    later: Later | None = None
    sales: Sales = Field(default_factory=Sales)

    @field_validator("behaviour")
    @classmethod
    def _no_machine_points(cls, behaviour: dict) -> dict:
        if MACHINE_CLICK in behaviour:
            raise ValueError(f"`{MACHINE_CLICK}` earns no points: a scanner's click is not the lead's; remove it "
                             "(clicks score under `email_clicked`)")
        return behaviour

    def temperature_of(self, score: int) -> str:
        """hot / warm / cold from the behaviour score."""
        for name, floor in sorted(self.temperature.items(), key=lambda item: -item[1]):
            if score >= floor:
                return name
        return "cold"

    def meets(self, threshold: Threshold, *, score: int, grade: str) -> bool:
        return score >= threshold.score_at_least and grade_at_least(grade, threshold.grade_at_least)
