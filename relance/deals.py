"""Won and lost deals, campaign costs, and the periods the economics are counted by (docs/economics.md).

A won deal makes the lead a customer (a second one is an upsell: it stays a customer); a lost deal sends
it back to nurturing with the reason. Either closes an open hand-off as accepted first: sales worked it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from relance.sales import BadAnswer, NoSuchLead, cancel_notices, open_handoff_of
from relance.scoring.config import ScoringConfig
from relance.scoring.ledger import move_stage
from relance.store.repo import find_lead
from relance.store.tables import Cost, Deal, Lead
from relance.wakes import lock_active_enrollments, wake_for_lead_changes

LOST_REASONS = ("price", "competitor", "no-budget", "no-decision", "bad-timing", "no-need", "missing-feature",
                "unreachable", "other")
OUTCOMES = ("won", "lost")
# the most one deal or cost may be, in euros: sums of a few such amounts stay finite (and exact to the cent), so
# figures never become infinite (`relance report --json` could not write them)
MONEY_MAX = 10**12


class BadValue(BadAnswer):
    """A value the deal or cost cannot take; `field` names it (the CLI says `--field`), `problem` says why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, f"{field} {problem}")
        self.problem = problem


@dataclass(frozen=True)
class Closing:
    """What sales says about a deal: won (amount, margin) or lost (reason), on which day, by whom."""

    outcome: str  # won | lost
    by: str = "sales"
    amount: float = 0.0
    margin: float = 0.0
    reason: str | None = None
    note: str = ""
    on: datetime | None = None  # default: now


def _money(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise BadValue(field, f"must be a number (got {value})")
    if value < 0:
        raise BadValue(field, f"must not be negative (got {value:,.2f})")
    if value > MONEY_MAX:
        raise BadValue(field, f"must be at most {MONEY_MAX:,} (got {value:,.2f})")
    return float(value)


def check_closing(closing: Closing, *, now: datetime) -> datetime:
    """Refuse what no deal can be; returns the day it closed."""
    if closing.outcome not in OUTCOMES:
        raise BadValue("outcome", f"must be won or lost (got {closing.outcome!r})")
    amount, margin = _money("amount", closing.amount), _money("margin", closing.margin)
    if margin > amount:
        raise BadValue("margin", f"({margin:,.2f}) is above the amount of the deal ({amount:,.2f}): "
                                 "the gross margin is the part of the amount the deal earns")
    if closing.outcome == "lost" and closing.reason not in LOST_REASONS:
        raise BadValue("reason", f"of a lost deal must be one of {', '.join(LOST_REASONS)} (got {closing.reason!r})")
    on = closing.on or now
    if on > now:
        raise BadValue("on", f"{on:%Y-%m-%d} is in the future: record a deal once it is won or lost")
    return on


def record_deal(session: Session, *, email: str, closing: Closing, scoring: ScoringConfig, now: datetime) -> Deal:
    """Store a won or lost deal and move the lead's stage; the caller commits."""

    on = check_closing(closing, now=now)
    lead = find_lead(session, email)
    if lead is None:
        raise NoSuchLead(f"no lead with email {email!r}")
    lock_active_enrollments(session, [lead.id])  # before the lead changes: see lock_active_enrollments
    won_before = session.exec(select(Deal.id).where(Deal.lead_id == lead.id, Deal.outcome == "won").limit(1)).first()
    deal = Deal(lead_id=lead.id, outcome=closing.outcome, kind="upsell" if won_before else "new", amount=closing.amount,
                margin=closing.margin, reason=closing.reason if closing.outcome == "lost" else None, note=closing.note,
                by=closing.by, closed_at=on, recorded_at=now)
    handoff = open_handoff_of(session, lead.id)
    if handoff is not None:  # sales worked the lead as an opportunity: the hand-off is answered
        handoff.status, handoff.answered_at, handoff.answered_by = "accepted", now, closing.by
        cancel_notices(session, handoff, why=f"hand-off answered (deal {closing.outcome}) by {closing.by}")
        handoff.note = handoff.note or f"accepted with the {closing.outcome} deal"
        move_stage(session, lead, "sql", now=now, by=closing.by, reason=f"accepted by sales with the {closing.outcome} deal")
    when = "" if on.date() == now.date() else f" on {on:%Y-%m-%d}"
    note = f" ({closing.note})" if closing.note else ""
    if closing.outcome == "won":
        move_stage(session, lead, "customer", now=now, by=closing.by,
                   reason=f"deal won{when}: {closing.amount:,.2f} (margin {closing.margin:,.2f}){note}")
    elif lead.stage not in ("customer", "disqualified"):  # a lost upsell keeps the customer; a lead that left stays out
        move_stage(session, lead, "nurturing", now=now, by=closing.by, reason=f"deal lost{when}: {closing.reason}{note}")
    session.add(deal)
    wake_for_lead_changes(session, [lead.id], scoring=scoring, now=now)  # a wait on the new stage goes on
    return deal


# Periods: a year (2026), a quarter (2026-Q1) or a month (2026-03), as months from year 0.

_PERIOD = re.compile(r"^(\d{4})(?:-(?:[Qq]([1-4])|(0[1-9]|1[0-2])))?$")


@dataclass(frozen=True)
class Period:
    name: str
    first: int  # year * 12 + month - 1 of its first month
    last: int  # ... of its last month

    def holds(self, other: "Period") -> bool:
        return self.first <= other.first and other.last <= self.last

    def holds_month(self, month: int) -> bool:
        return self.first <= month <= self.last

    @property
    def order(self) -> tuple[int, int]:
        """Chronological, a year before its quarters and a quarter before its months."""
        return self.first, self.first - self.last


def parse_period(text: str) -> Period:
    """A period name as a Period; ValueError with a sentence otherwise."""
    found = _PERIOD.match(text.strip()) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"{text!r} is not a period: use a year (2026), a quarter (2026-Q1) or a month (2026-03)")
    year, quarter, month = int(found[1]), found[2], found[3]
    if quarter:
        first = year * 12 + (int(quarter) - 1) * 3
        return Period(f"{year}-Q{quarter}", first, first + 2)
    if month:
        return Period(f"{year}-{month}", year * 12 + int(month) - 1, year * 12 + int(month) - 1)
    return Period(str(year), year * 12, year * 12 + 11)


def month_of(when: datetime) -> str:
    return f"{when:%Y-%m}"


def quarter_of_month(month: int) -> Period:
    year, index = divmod(month, 12)
    return parse_period(f"{year}-Q{index // 3 + 1}")


def known_sources(session: Session) -> list[str]:
    return sorted(s for s in session.exec(select(Lead.source).distinct()).scalars() if s)


def record_cost(session: Session, *, source: str, amount: float, margin: float, period: str, now: datetime,
                note: str = "") -> Cost:
    """Store what a source cost in a period (and a gross margin not tied to a deal); the caller commits."""
    if not source.strip():
        raise BadValue("source", "must name the leads' source (e.g. salon-vivatech)")
    try:
        name = parse_period(period).name
    except ValueError as exc:
        raise BadValue("period", str(exc)) from None
    cost = Cost(source=source.strip(), amount=_money("amount", amount), margin=_money("margin", margin), period=name,
                note=note, created_at=now)
    session.add(cost)
    return cost
