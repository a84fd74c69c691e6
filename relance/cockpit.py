"""The tick artifacts' markdown, from figures (dicts) only: who is where in a scenario now and its funnel with the
reasons (`report-NAME`), the account overview (`account-overview`), and each artifact version's title (its
description). Pure: no database, no Prefect (the queries: relance.standing; publishing: tasks/artifacts.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from relance.clock import ensure_utc

BAR_WIDTH = 20  # blocks of the longest bar


def cell(value: object) -> str:
    """A table cell's text: the UI renders markdown, so a pipe or a newline in a step id would break a row."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def row(cells: Sequence[object]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A markdown table's lines: the head, its rule, the rows."""
    return [row(head), "|" + "---|" * len(head), *(row(r) for r in rows)]


def bar(n: int, most: int, width: int = BAR_WIDTH) -> str:
    """`n` as a bar of full blocks, `most` being `width` blocks long; any n above 0 shows at least one."""
    if n <= 0 or most <= 0:
        return ""
    return "█" * max(1, round(width * n / most))


def share(part: int, whole: int) -> str:
    """`12 (40.0 %)`: a count and its share of `whole` (the count alone when either is 0)."""
    return f"{part} ({part / whole * 100:.1f} %)" if whole and part else str(part)


def when(at: datetime | None) -> str:
    """`2026-03-05 09:00 UTC`, or `-`."""
    return f"{ensure_utc(at):%Y-%m-%d %H:%M} UTC" if at is not None else "-"


def _span(within: timedelta) -> str:
    hours = within.total_seconds() / 3600
    return f"{hours:g} h" if hours >= 1 else f"{within.total_seconds() / 60:g} min"


# what a step-log outcome is called where people read it beside the counts of now: a send step's `sent` row means
# the email was written to the outbox (whether it left is the `sent` column), `waiting` that it began a wait then
_OUTCOME_WORDS = {"sent": "written", "waiting": "began waiting"}


def outcome_words(outcomes: Mapping[str, int]) -> str:
    """A step's step-log outcomes for a person, most frequent first: `written 12, began waiting 3, then 2`."""
    return ", ".join(f"{_OUTCOME_WORDS.get(k, k)} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0])))


def reasons_words(reasons: Mapping[str, Mapping[str, int]]) -> str:
    """A step's reasons, outcome by outcome, most common first: `not-ready: score below 60 (4), grade C < B (1)`."""
    parts = []
    for outcome in sorted(reasons, key=lambda o: (-sum(reasons[o].values()), o)):
        found = sorted(reasons[outcome].items(), key=lambda kv: (-kv[1], kv[0]))
        parts.append(f"{outcome}: " + ", ".join(f"{reason} ({n})" for reason, n in found))
    return "; ".join(parts)


def who_is_where_markdown(figures: Mapping[str, Any]) -> str:
    """`report-NAME`: who is at each step now, the funnel since the start with rates and a bar per step, and what
    happened at each step and why (relance.standing.who_is_where's figures)."""
    scenario, rows = figures["scenario"], figures["steps"]
    lines = [f"# {cell(scenario)}: who is where, {when(figures['as_of'])}", ""]
    if not rows:
        return "\n".join(lines + ["No lead has entered this scenario yet: nothing to show."])
    span = _span(figures["due_within"])
    lines += ["## Now", ""]
    if sum(r["now"] for r in rows):
        most = max(r["now"] for r in rows)
        lines += table(["step", "here now", "", "waiting", f"due within {span}", "next due", "last due"],
                       [[r["step"], r["now"], bar(r["now"], most), r["waiting"], r["due"], when(r["first_due"]),
                         when(r["last_due"])] for r in rows])
    else:
        lines.append("No lead is in this scenario now: every enrollment has left it.")
    goals = figures["goals"]
    most = max(r["reached"] for r in rows)

    def mail(r: Mapping[str, Any], figure: str) -> str:  # a step that wrote no email has no email figures
        if not r["outcomes"].get("sent") or (figure == "delivered" and not figures["delivery_reported"]):
            return "-"
        return share(r[figure], r["reached"])

    lines += ["", "## Funnel since the scenario started", ""]
    lines += table(["step", "entries", "", "sent", "delivered", "opened", "clicked", *(f"goal: {g}" for g in goals), "left"],
                   [[r["step"], r["reached"], bar(r["reached"], most), *(mail(r, f) for f in ("sent", "delivered", "opened", "clicked")),
                     *(share(r["goals"].get(g, 0), r["reached"]) for g in goals), share(r["left"], r["reached"])]
                    for r in rows])
    explained = [r for r in rows if r["outcomes"]]
    lines += ["", "## What happened at each step, and why", ""]
    lines += table(["step", "step log (every pass)", "why"],
                   [[r["step"], outcome_words(r["outcomes"]), reasons_words(r["reasons"]) or "-"] for r in explained])
    lines += ["", f"Here now: active enrollments at the step; due within {span}: of them, those the next tick takes up "
              "if it runs by then; next and last due: their earliest and latest due time. Entries: enrollments that "
              "reached the step; every percentage is of the step's entries. Delivered, opened, clicked: distinct leads "
              "(delivered as the mail service reports it, `-` when it reports none or the step sends no email); left: enrollments that ended at "
              "the step. What each column counts: docs/ticks.md."]
    return "\n".join(lines)


def deliverability_markdown(scenario: str, d: Mapping[str, object]) -> str:
    """The scenario's deliverability as `relance report` shows it (`relance.report.deliverability`): a row per
    sending day, the window's total, and its warnings."""
    window = f"{d['first_day']} to {d['last_day']}"
    figures = d["scenarios"].get(scenario)  # type: ignore[attr-defined]
    lines = [f"## Deliverability, {window}", ""]
    if not figures:
        return "\n".join(lines + ["No email to a lead left on these days."])
    head = ["day", "sent", "hard bounces", "soft bounces", "complaints", "unsubscribes", "hard %", "complaints %",
            "unsubscribes %"]

    def pct(value: object) -> str:
        return "-" if value is None else f"{float(value) * 100:.2f} %"  # type: ignore[arg-type]

    days = [*figures["by_day"], dict(figures["total"], day=f"last {d['days']} days")]
    lines += table(head, [[r["day"] + ("*" if r["small_sample"] else ""), r["sent"], r["hard_bounces"], r["soft_bounces"],
                           r["complaints"], r["unsubscribes"], pct(r["hard_bounce_rate"]), pct(r["complaint_rate"]),
                           pct(r["unsubscribe_rate"])] for r in days])
    lines += ["", f"By the day the email left (UTC); * under {d['min_sent']} emails: too few to judge alone."]
    lines += [f"- **{cell(w['level'])}**: {cell(w['message'])}" for w in d["warnings"]]  # type: ignore[attr-defined]
    return "\n".join(lines)


STAGE_WORDS = {"sql-pending": "sql-pending (with sales, not answered)"}


def account_markdown(figures: Mapping[str, Any]) -> str:
    """`account-overview`: leads by stage, MQL and SQL reached this week, hand-offs against their SLA, and the
    deliverability of every scenario's emails (relance.standing.account_overview's figures)."""
    stages, week, sla, d = figures["leads_by_stage"], figures["week"], figures["sla"], figures["deliverability"]
    total = sum(stages.values())
    most = max(stages.values(), default=0)
    lines = [f"# Account overview, {when(figures['as_of'])}", "", "## Leads by stage", ""]
    lines += table(["stage", "leads", ""], [[STAGE_WORDS.get(s, s), share(n, total), bar(n, most)] for s, n in stages.items()])
    lines += ["", f"## This week ({week['iso']}, from {when(week['start'])})", "",
              f"- MQL reached: **{week['mql']}**", f"- SQL reached: **{week['sql']}**", "",
              "## Sales hand-offs", "",
              f"- waiting for an answer: **{sla['open']}**",
              f"- SLA breaches: **{sla['breaches']}** ({sla['late_answers']} answered late, "
              f"{sla['unanswered_past_deadline']} unanswered past the deadline) of {sla['measured']} measured",
              "", f"## Deliverability, {d['first_day']} to {d['last_day']} (every scenario)", ""]
    t = d["total"]

    def pct(rate: float | None) -> str:
        return "-" if rate is None else f"{rate * 100:.2f} %"

    lines += table(["sent", "hard bounces", "soft bounces", "complaints", "unsubscribes"],
                   [[t["sent"], f"{t['hard_bounces']} ({pct(t['hard_bounce_rate'])})",
                     f"{t['soft_bounces']} ({pct(t['soft_bounce_rate'])})", f"{t['complaints']} ({pct(t['complaint_rate'])})",
                     f"{t['unsubscribes']} ({pct(t['unsubscribe_rate'])})"]])
    if d["warnings"]:
        lines += ["", f"**{d['warnings']} deliverability warning(s)**: see each scenario's `report-NAME` artifact."]
    lines += ["", "MQL and SQL reached: leads whose stage history first reached the stage (or a later one) this ISO "
              "week, UTC. Rates: shares of the emails to leads that left. What each figure counts: docs/ticks.md."]
    return "\n".join(lines)


def tick_title(scenario: str, now: datetime, summary: str) -> str:
    """The title of a `tick-NAME` version: `whitepaper-nurture, tick of 2026-03-02 09:00 UTC: 6 entered, ...`."""
    prefix = f"{scenario}: "
    return cell(f"{scenario}, tick of {when(now)}: {summary[len(prefix):] if summary.startswith(prefix) else summary}")


def who_is_where_title(figures: Mapping[str, Any]) -> str:
    """The title of a `report-NAME` version: `whitepaper-nurture at 2026-03-02 09:00 UTC: 14 here, 9 waiting, ...`."""
    rows = figures["steps"]
    here, waiting, due, entered = (sum(r[k] for r in rows) for k in ("now", "waiting", "due", "entered"))
    return cell(f"{figures['scenario']} at {when(figures['as_of'])}: {here} in the scenario now, {waiting} waiting, "
                f"{due} due within {_span(figures['due_within'])}, {entered} entered since the start")


def account_title(figures: Mapping[str, Any]) -> str:
    """The title of an `account-overview` version: `Account at 2026-03-02 09:00 UTC: 120 leads, 3 MQL and ...`."""
    week, sla = figures["week"], figures["sla"]
    return cell(f"Account at {when(figures['as_of'])}: {sum(figures['leads_by_stage'].values())} leads, {week['mql']} MQL "
                f"and {week['sql']} SQL reached this week, {sla['open']} hand-offs waiting, {sla['breaches']} SLA breaches")
