"""`relance report`'s figures as tables (the command line and the demo print them): funnel, scenarios, SLA,
economics, delivery, deliverability. Every table fits 80 columns without cutting a figure."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Column, Table

from relance.cockpit import outcome_words


def _grid(first: str, *numbers: str, title: str) -> Table:
    """A table of figures that fits 80 columns: a name column that folds (never cut), then right-aligned numbers."""
    return Table(Column(first, overflow="fold"), *(Column(h, justify="right", no_wrap=True) for h in numbers), title=title,
                 box=box.SIMPLE_HEAD, pad_edge=False, padding=0)


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def print_report(figures: dict, out: Console, err: Console) -> None:
    """The report's figures as tables on `out`; what needs an operator's look on `err`."""
    f = figures["funnel"]
    funnel = Table("stage", "leads", "rate from previous", title="Funnel")
    rates = [None, f["rates"]["lead_to_mql"], f["rates"]["mql_to_sql"], f["rates"]["sql_to_customer"]]
    for (stage, n), rate in zip(f["counts"].items(), rates):
        funnel.add_row(stage, str(n), _pct(rate))
    funnel.caption = (f"lead -> customer {_pct(f['rates']['lead_to_customer'])}; median time to MQL "
                      f"{f['median_hours_to_mql'] or '-'} h, to SQL {f['median_hours_to_sql'] or '-'} h")
    out.print(funnel)
    for name, rows in figures["scenarios"].items():
        heads = ("reached", "entered", "here", "waiting", "sent", "opened", "clicked", "left")
        table = _grid("step", *heads, title=f"Scenario {name}")
        for r in rows:
            table.add_row(r["step"], *(str(r["now" if k == "here" else k]) for k in heads))
        table.caption = ("here / waiting: there now / in a wait now; sent: emails that left; left: enrollments that "
                         "ended at the step")
        out.print(table)
        out.print("  step log (every pass; written: emails queued):", markup=False, highlight=False)
        for r in rows:
            out.print(f"    {r['step']}: {outcome_words(r['outcomes'])}", markup=False, highlight=False, soft_wrap=True)
    _print_sla(figures["sla"], out)
    _print_economics(figures["economics"], out)
    d = figures["delivery"]
    out.print("Outbox: " + (", ".join(f"{n} {status}" for status, n in sorted(d["by_status"].items())) or "empty"),
              markup=False, highlight=False)
    if d["unknown"]:
        err.print(f"[yellow]{len(d['unknown'])} message(s) with an unknown outcome (handed to the transport, no answer, or "
                  "cut off mid-send), not sent again automatically: check the transport's logs, then `relance outbox resolve "
                  "ID ... --as pending|failed` (outbox " + ", ".join(str(r["outbox_id"]) for r in d["unknown"][:5]) + ")[/]",
                  soft_wrap=True)
    if failed := d["by_status"].get("failed"):
        err.print(f"{failed} message(s) failed: `relance outbox list --status failed` shows why; once the cause is fixed, "
                  "`relance outbox resend ID ...` sends them with the next tick", soft_wrap=True, markup=False, highlight=False,
                  style="yellow")
    for f in d["failed_enrollments"]:
        err.print(f"{f['count']} lead(s) left {f['scenario']} at step {f['step_id']} on an error, e.g. {f['reason']}",
                  soft_wrap=True, markup=False, highlight=False, style="yellow")
    if "deliverability" in figures:
        print_deliverability(figures["deliverability"], out, err)
    if figures.get("held_back"):
        print_held_back(figures["held_back"], out)


def print_held_back(held: dict, out: Console) -> None:
    """The emails sending.yaml held back, per scenario, and why."""
    table = _grid("scenario", "deferred", "still waiting", "skipped", title="Held back by sending.yaml")
    for name, h in held.items():
        table.add_row(name, str(h["deferred"]), str(h["waiting"]), str(h["skipped"]))
    table.caption = "deferred: sent later or still waiting for the next allowed moment; skipped: held: skip"
    out.print(table)
    for name, h in held.items():
        out.print(f"  {name}: " + ", ".join(f"{kind} {n}" for kind, n in sorted(h["reasons"].items(), key=lambda kv: -kv[1])),
                  markup=False, highlight=False, soft_wrap=True)


def _print_sla(s: dict, out: Console) -> None:
    """The SLA figures, one per line (never cut in 80 columns): within target / deadline and breaches are all out of
    `measured` (docs/ticks.md)."""
    sla = Table(Column("figure", no_wrap=True), Column("value", overflow="fold"), title="Sales SLA", show_header=False,
                box=box.SIMPLE_HEAD)
    sla.add_row("hand-offs", f"{s['handoffs']} ({s['open']} open)")
    sla.add_row("measured", f"{s['measured']} (answered, or unanswered past the deadline)")
    sla.add_row("within target", f"{s['met_target']} ({_pct(s['within_target'])})")
    sla.add_row("within deadline", f"{s['met_deadline']} ({_pct(s['within_deadline'])})")
    sla.add_row("breaches", f"{s['breaches']} ({s['late_answers']} answered late, {s['unanswered_past_deadline']} unanswered)"
                            " = measured - within deadline")
    sla.add_row("answers", ", ".join(f"{k} {v}" for k, v in s["answers"].items()) or "-")
    sla.add_row("rejection reasons", ", ".join(f"{k} {v}" for k, v in s["rejection_reasons"].items()) or "-")
    out.print(sla)


def _money_row(label: str, m: dict) -> list[str]:
    return [label, str(m["leads"]), str(m["customers"]), str(m["deals_won"]), str(m["deals_lost"]), f"{m['cost']:,.0f}",
            f"{m['gross_margin']:,.0f}", "-" if m["cost_per_lead"] is None else f"{m['cost_per_lead']:,.0f}",
            "-" if m["cost_per_acquisition"] is None else f"{m['cost_per_acquisition']:,.0f}",
            "-" if m["roi"] is None else f"{m['roi']:.2f}"]


def _print_economics(e: dict, out: Console) -> None:
    """The economics by source (of --period, or all time), then the total of each period in the data."""
    def table(first: str, title: str) -> Table:  # figures are never cut, even in 80 columns
        heads = ("leads", "customers", "won", "lost", "cost", "margin", "CPL", "CPA", "ROI")
        return _grid(first, *heads, title=title)

    money = table("source", f"Economics {e['period']}" if e["period"] else "Economics (all time)")
    for source, m in [*e["by_source"].items(), ("all", e["total"])]:
        money.add_row(*_money_row(source, m))
    out.print(money)
    if e["by_period"]:
        periods = table("period", "Economics by period (all sources)")
        for name, p in e["by_period"].items():
            periods.add_row(*_money_row(name, p["total"]))
        out.print(periods)


def _bare(value: float) -> str:
    return f"{value * 100:g}%"  # in a caption that folds: never cut between the figure and its sign


def _pct2(value) -> str:
    return "-" if value is None else f"{value * 100:.2f} %"


def print_deliverability(d: dict, out: Console, err: Console) -> None:
    """One table per scenario that mailed leads in the window: each sending day, then the window's total; a day of
    fewer than `min_sent` emails is marked `*` (too few to judge alone). The warnings go to `err`, the worst first."""
    window = f"{d['first_day']} to {d['last_day']}"
    if not d["scenarios"]:
        out.print(f"Deliverability ({window}): no email to a lead left", markup=False, highlight=False)
    heads = ("sent", "hard", "soft", "compl.", "unsub.", "hard %", "compl. %", "unsub. %")
    for name, figures in d["scenarios"].items():
        table = _grid("day", *heads, title=f"Deliverability {name}, {window}")
        for row in [*figures["by_day"], dict(figures["total"], day=f"last {d['days']} days")]:
            marker = "*" if row["small_sample"] else ""
            table.add_row(row["day"] + marker, str(row["sent"]), str(row["hard_bounces"]), str(row["soft_bounces"]),
                          str(row["complaints"]), str(row["unsubscribes"]), _pct2(row["hard_bounce_rate"]),
                          _pct2(row["complaint_rate"]), _pct2(row["unsubscribe_rate"]))
        table.caption = (f"day: when the email left (UTC); * under {d['min_sent']} emails, too few to judge alone; "
                         f"complaints must stay under {_bare(d['thresholds']['complaint_limit'])} (Gmail, Yahoo), hard "
                         f"bounces under {_bare(d['thresholds']['hard_bounce_limit'])}")
        out.print(table)
    if lost := {k: n for k, n in d["unattributed"].items() if n}:
        words = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in lost.items())
        out.print(f"Not counted in any rate ({window}): {words} that name no email sent to a lead "
                  "(recorded by hand, or for a message relance did not send)", markup=False, highlight=False, soft_wrap=True)
    for w in d["warnings"]:
        err.print(w["message"], soft_wrap=True, markup=False, highlight=False, style="red" if w["level"] == "over" else "yellow")
