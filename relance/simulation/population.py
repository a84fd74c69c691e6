"""Synthetic leads for a simulation: a plausible B2B mix of grades, stages and timezones."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Callable

from relance.engine.types import LeadFacts
from relance.scoring.config import ScoringConfig

# (value, weight): weights need not sum to 1.
GRADES = (("A", 10), ("B", 25), ("C", 35), ("D", 30))
STAGES = (("lead", 60), ("nurturing", 30), ("mql", 10))
# timezone -> country: leads come mostly from French-speaking Europe and Canada.
PLACES = (
    ("Europe/Paris", "FR", 55), ("Europe/Brussels", "BE", 12), ("Europe/Zurich", "CH", 8),
    ("America/Toronto", "CA", 10), ("Europe/London", "GB", 10), ("UTC", "US", 5),
)
SECTORS = (("saas", 35), ("industrie", 25), ("services", 25), ("retail", 15))
# A lead that matches no segment after this many draws enters anyway (the simulation is a "what if").
MAX_DRAWS = 50


def _pick(rng: random.Random, options: tuple[tuple, ...]) -> tuple:
    return rng.choices(options, weights=[option[-1] for option in options])[0]


def synthetic_lead(
    index: int, rng: random.Random, *, scoring: ScoringConfig, stage: str | None = None,
    accepts: Callable[[LeadFacts], bool] | None = None,
) -> LeadFacts:
    """One lead; redrawn (a bounded number of times) until `accepts` it, e.g. a segment trigger."""
    lead = None
    for _ in range(MAX_DRAWS if accepts else 1):
        timezone, country, _ = _pick(rng, PLACES)
        score = int(rng.triangular(0, 45, 5))
        lead = LeadFacts(
            id=index + 1,
            email=f"lead{index + 1:06d}@simulation.invalid",
            stage=stage or _pick(rng, STAGES)[0],
            score=score,
            grade=_pick(rng, GRADES)[0],
            temperature=scoring.temperature_of(score),
            fields={"country": country, "sector": _pick(rng, SECTORS)[0]},
            timezone=timezone,
        )
        if accepts is None or accepts(lead):
            break
    assert lead is not None
    return lead


def arrival_times(count: int, *, start: datetime, spread: timedelta, rng: random.Random) -> list[datetime]:
    """When each lead enters: uniformly over `spread` after `start`, in order."""
    seconds = spread.total_seconds()
    return sorted(start + timedelta(seconds=rng.random() * seconds) for _ in range(count)) if seconds > 0 else [start] * count
