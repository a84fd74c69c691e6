"""The figures the tick artifacts show a marketer: who is where in a scenario now, its funnel with the reasons behind
each step's outcomes, and the account's overview. Set-based queries only (one GROUP BY per figure, never a loop over
leads): each costs what the scenario (or, for the overview, the account) holds. Markdown: relance.cockpit."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, time, timedelta, timezone
from typing import Any, Sequence

from sqlalchemy import func, select
from sqlmodel import Session

from relance.clock import ensure_utc
from relance.report import REACHES, deliverability, leads_by_stage, rates_of, sla, steps, whereabouts
from relance.store.tables import StageChange, StepLog

DUE_WITHIN = timedelta(hours=1)  # "due next": by the next tick of an hourly schedule
# step-log outcomes whose rows say why (detail `reason`, `goal` or `error`): a goal reached, a hand-off that did not
# happen, an enrollment that failed
EXPLAINED = ("exited", "not-ready", "cooling-off", "failed")


def outcome_reasons(session: Session, scenario: str) -> dict[str, dict[str, dict[str, int]]]:
    """Per step of `scenario`, since it started: step -> outcome -> reason -> step-log rows, for the outcomes that
    say why (EXPLAINED): a goal exit's goal, a hand-off's `not-ready: score below 60`, a failure's error."""
    why = func.coalesce(StepLog.detail["reason"].as_string(), StepLog.detail["goal"].as_string(),
                        StepLog.detail["error"].as_string())
    found: dict[str, dict[str, dict[str, int]]] = {}
    for step_id, outcome, reason, n in session.execute(
        select(StepLog.step_id, StepLog.outcome, why, func.count())
        .where(StepLog.scenario == scenario, StepLog.outcome.in_(EXPLAINED))
        .group_by(StepLog.step_id, StepLog.outcome, why)
    ).all():
        found.setdefault(step_id, {}).setdefault(outcome, {})[reason or "no reason recorded"] = n
    return found


def who_is_where(session: Session, scenario: str, *, order: Sequence[str] = (), now: datetime,
                 within: timedelta = DUE_WITHIN) -> dict[str, Any]:
    """One scenario as of `now`, a row per step in its order: who is here now (`now`, `waiting`, `due` by `now` +
    `within`, `first_due`, `last_due`), and since the scenario started (relance.report.steps: `reached` is a step's
    entries, `sent`, `delivered`, `opened`, `clicked`, `left`, `outcomes`), `goals` (enrollments that left here on each
    goal) and `reasons` (outcome -> reason -> count). `goals` lists every goal reached, `delivery_reported` whether
    the mail service reported any delivery (SMTP reports none: `delivered` is then unknown)."""
    now = ensure_utc(now)
    rows = steps(session, scenario, {scenario: tuple(order)}).get(scenario, [])
    here = {step: figures for (_name, step), figures in whereabouts(session, scenario, now=now, within=within).items()}
    reasons = outcome_reasons(session, scenario)
    goals: list[str] = []
    for row in rows:
        row.update(here.get(row["step"], {"now": row["now"], "waiting": row["waiting"], "due": 0, "first_due": None,
                                          "last_due": None}))
        row["reasons"] = reasons.get(row["step"], {})
        row["goals"] = dict(row["reasons"].get("exited", {}))
        goals += [goal for goal in row["goals"] if goal not in goals]
    return {"scenario": scenario, "as_of": now, "due_within": within, "steps": rows, "goals": goals,
            "delivery_reported": any(row["delivered"] for row in rows)}


STAGE_ORDER = ("lead", "mql", "sql-pending", "sql", "customer", "nurturing", "later", "disqualified")


def iso_week_start(now: datetime) -> datetime:
    """Monday 00:00 UTC of `now`'s ISO week."""
    day = ensure_utc(now).date()
    return datetime.combine(day - timedelta(days=day.weekday()), time(0), tzinfo=timezone.utc)


def reached_since(session: Session, stage: str, start: datetime, now: datetime) -> int:
    """Leads whose stage history first reached `stage` (or a later one: relance.report's funnel) from `start` up to
    `now`: a lead that was an MQL before counts no more when it becomes one again."""
    first = (select(StageChange.lead_id).where(StageChange.to_stage.in_(sorted(REACHES[stage])))
             .group_by(StageChange.lead_id)
             .having(func.min(StageChange.at) >= start, func.min(StageChange.at) <= now).subquery())
    return session.execute(select(func.count()).select_from(first)).scalar_one()


def account_overview(session: Session, *, now: datetime) -> dict[str, Any]:
    """The whole account as of `now`: leads by stage, MQL and SQL first reached in `now`'s ISO week, the hand-offs
    against their SLA (relance.report.sla) and the deliverability of every scenario's emails over the report's window
    (relance.report.deliverability, its totals added up)."""
    now = ensure_utc(now)
    start = iso_week_start(now)
    stages = leads_by_stage(session)
    d = deliverability(session, now=now)
    total: Counter = Counter()
    for figures in d["scenarios"].values():
        total.update({k: v for k, v in figures["total"].items() if k != "small_sample" and not k.endswith("_rate")})
    return {
        "as_of": now,
        "leads_by_stage": {stage: stages.get(stage, 0) for stage in (*STAGE_ORDER, *sorted(set(stages) - set(STAGE_ORDER)))},
        "week": {"start": start, "iso": f"{start.isocalendar().year}-W{start.isocalendar().week:02d}",
                 "mql": reached_since(session, "mql", start, now), "sql": reached_since(session, "sql", start, now)},
        "sla": sla(session, now=now),
        "deliverability": {"days": d["days"], "first_day": d["first_day"], "last_day": d["last_day"],
                           "total": rates_of(total), "warnings": len(d["warnings"])},
    }
