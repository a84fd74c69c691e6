"""`relance sales ...` and `cost add`: sales' answers, hand-offs, deals, and what each source cost."""

from __future__ import annotations

from typing import Optional

import typer
from rich.text import Text

from relance.cli.common import NOW_HELP, _fail, _workspace, _now, _print_json, _settings, _stored, _when, console, err


sales_app = typer.Typer(no_args_is_help=True, help="Sales: the open hand-offs, answers to a handed-off lead, reassignment.")


def _answer(email: str, reply, now: Optional[str]) -> None:
    from sqlmodel import Session

    from relance.plans import open_store
    from relance.sales import SalesError, answer

    at = _now(now)
    scoring = _workspace().scoring  # before the store: a missing folder creates no database
    engine = open_store(_settings())
    with Session(engine) as session:
        try:
            handoff = answer(session, email=email, reply=reply, scoring=scoring, now=at)
        except SalesError as exc:
            _fail(str(exc))
        session.commit()
        cools_off = (f"; no automatic hand-off before {handoff.answered_at + scoring.handoff.after_rejection:%Y-%m-%d} "
                     "(scoring.yaml handoff.after_rejection), then only after a new sales-ready action"
                     if handoff.status == "rejected" else "")
        console.print(f"{email}: hand-off {handoff.status}" + (f" until {handoff.later_until:%Y-%m-%d}" if handoff.later_until else "")
                      + cools_off, soft_wrap=True)


@sales_app.command("accept")
def sales_accept(
    email: str = typer.Argument(...),
    by: str = typer.Option("sales", "--by", help="Who answers (recorded in the stage history)."),
    budget: Optional[str] = typer.Option(None), authority: Optional[str] = typer.Option(None),
    need: Optional[str] = typer.Option(None), timing: Optional[str] = typer.Option(None),
    note: str = typer.Option("", "--note"),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Sales accepts the lead: stage sql, BANT recorded."""
    from relance.sales import Answer

    bant = {k: v for k, v in (("budget", budget), ("authority", authority), ("need", need), ("timing", timing)) if v}
    _answer(email, Answer("accept", by, note=note, bant=bant), now)


@sales_app.command("reject")
def sales_reject(
    email: str = typer.Argument(...),
    reason: str = typer.Option(..., "--reason", help="no-budget, no-need, bad-timing, not-decision-maker, competitor, bad-fit, unreachable, other"),
    note: str = typer.Option("", "--note", help="Free text for marketing."),
    by: str = typer.Option("sales", "--by"),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Sales rejects the lead: back to nurturing, with the reason; no automatic hand-off during the cool-off."""
    from relance.sales import Answer

    _answer(email, Answer("reject", by, reason=reason, note=note), now)


@sales_app.command("later")
def sales_later(
    email: str = typer.Argument(...),
    until: Optional[str] = typer.Option(None, "--until", help="Re-engage date (ISO; default: later.default_delay)."),
    reason: Optional[str] = typer.Option(None, "--reason"),
    by: str = typer.Option("sales", "--by"),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Sales says "later": stage later, re-engaged on the date (or at once back to you if the lead turns hot)."""
    from relance.sales import Answer

    _answer(email, Answer("later", by, reason=reason, until=_now(until, "--until") if until else None), now)


@sales_app.command("list")
def sales_list(
    owner: Optional[str] = typer.Option(None, "--owner", help="Only this owner's hand-offs."),
    overdue: bool = typer.Option(False, "--overdue", help="Only those past their deadline (sla.contact_within)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """The open hand-offs, soonest deadline first: lead, owner, team, age, time left before target and deadline."""
    from sqlmodel import Session

    from relance.sales import open_handoffs

    at = _now(now)
    with Session(_stored()) as session:
        rows = open_handoffs(session, now=at, owner=owner, overdue=overdue)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        console.print("no open hand-off" + (f" of {owner}" if owner else "") + (" past its deadline" if overdue else ""))
        return
    console.print(f"[bold]Open hand-offs ({len(rows)})[/bold] at {_when(at)}, soonest deadline first")
    for r in rows:  # the email whole on its own line: it is what every `relance sales` command takes
        console.print(Text(f"\n{r['email']}  {', '.join(x for x in (r['name'], r['company']) if x)}"), soft_wrap=True)
        console.print(f"  owner {r['owner']}" + (f" (team {r['team']})" if r["team"] else "")
                      + f"  age {_duration(r['age_minutes'])}  target {_left(r['target_left_minutes'])}"
                      f"  deadline {_left(r['deadline_left_minutes'])}", highlight=False)


def _duration(minutes: int) -> str:
    days, rest = divmod(abs(minutes), 24 * 60)
    return (f"{days}d " if days else "") + f"{rest // 60}h{rest % 60:02d}"


def _left(minutes: int) -> str:
    """Time left, or how late (red) once it has passed."""
    return f"{_duration(minutes)} left" if minutes > 0 else f"[red]OVERDUE by {_duration(minutes)}[/red]"


@sales_app.command("reassign")
def sales_reassign(
    email: str = typer.Argument(..., help="The lead's email."),
    to: str = typer.Option(..., "--to", help="The new owner's email (gets the hand-off email)."),
    by: str = typer.Option("sales", "--by", help="Who reassigns (recorded with the change)."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Give the lead's open hand-off to another owner; the SLA deadline does not move."""
    from sqlmodel import Session

    from relance.sales import SalesError, reassign

    at = _now(now)
    with Session(_stored()) as session:
        try:
            handoff = reassign(session, email=email, to=to, by=by, now=at)
        except SalesError as exc:
            _fail(str(exc))
        session.commit()
        console.print(f"{email}: hand-off now owned by {handoff.owner} (deadline {_when(handoff.deadline_at)} unchanged); "
                      f"{handoff.owner} is emailed")


def _deal(email: str, closing, now: Optional[str]) -> None:
    """Record a won or lost deal; a refused value is one sentence naming its option."""
    from sqlmodel import Session

    from relance.deals import BadValue, record_deal
    from relance.sales import SalesError
    from relance.store.tables import Lead

    at = _now(now)
    scoring = _workspace().scoring  # before the store: a missing folder creates no database
    with Session(_stored()) as session:
        try:
            deal = record_deal(session, email=email, closing=closing, scoring=scoring, now=at)
        except BadValue as exc:
            _fail(f"--{exc.field} {exc.problem}")
        except SalesError as exc:
            _fail(str(exc))
        session.commit()
        stage = session.get(Lead, deal.lead_id).stage
        what = (f"{'upsell' if deal.kind == 'upsell' else 'deal'} won: {deal.amount:,.2f} (margin {deal.margin:,.2f})"
                if deal.outcome == "won" else f"deal lost: {deal.reason}")
        console.print(f"{email}: {what} on {deal.closed_at:%Y-%m-%d}; stage {stage}", markup=False, highlight=False, soft_wrap=True)


@sales_app.command("won")
def sales_won(
    email: str = typer.Argument(..., help="The lead's email."),
    amount: float = typer.Option(0.0, "--amount", help="What the deal is worth."),
    margin: float = typer.Option(0.0, "--margin", help="Its gross margin (part of the amount): what ROI counts."),
    on: Optional[str] = typer.Option(None, "--on", help="The day it was won (ISO date; default: now)."),
    by: str = typer.Option("sales", "--by", help="Who won it (recorded in the stage history)."),
    note: str = typer.Option("", "--note"),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Sales won a deal: the lead becomes a customer (a customer's next deal is an upsell)."""
    from relance.deals import Closing

    _deal(email, Closing("won", by, amount=amount, margin=margin, note=note, on=_now(on, "--on") if on else None), now)


@sales_app.command("lost")
def sales_lost(
    email: str = typer.Argument(..., help="The lead's email."),
    reason: str = typer.Option(..., "--reason", help="price, competitor, no-budget, no-decision, bad-timing, no-need, "
                                                      "missing-feature, unreachable, other"),
    note: str = typer.Option("", "--note", help="Free text for marketing."),
    by: str = typer.Option("sales", "--by", help="Who lost it (recorded in the stage history)."),
    on: Optional[str] = typer.Option(None, "--on", help="The day it was lost (ISO date; default: now)."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Sales lost a deal: the lead goes back to nurturing with the reason (a customer stays a customer)."""
    from relance.deals import Closing

    _deal(email, Closing("lost", by, reason=reason, note=note, on=_now(on, "--on") if on else None), now)


cost_app = typer.Typer(no_args_is_help=True, help="Campaign costs and margins per source (for CPL, CPA, ROI).")


@cost_app.command("add")
def cost_add(
    source: str = typer.Argument(..., help="The lead source, as in the leads' `source` (e.g. salon-vivatech)."),
    amount: float = typer.Argument(..., help="What it cost."),
    margin: float = typer.Option(0.0, "--margin", help="Gross margin it brought that no won deal records."),
    period: Optional[str] = typer.Option(None, "--period", help="2026, 2026-Q1 or 2026-03 (default: the month of --now)."),
    note: str = typer.Option("", "--note"),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Record what a source cost in a period (and a gross margin not tied to a deal)."""
    from sqlmodel import Session

    from relance.deals import BadValue, known_sources, month_of, record_cost
    from relance.plans import open_store

    at = _now(now)
    with Session(open_store(_settings())) as session:
        try:
            cost = record_cost(session, source=source, amount=amount, margin=margin, period=period or month_of(at), now=at,
                               note=note)
        except BadValue as exc:
            _fail(f"{exc.field.upper() if exc.field in ('source', 'amount') else '--' + exc.field} {exc.problem}")
        session.commit()
        known = known_sources(session)
        console.print(f"{cost.source}: cost {cost.amount:,.2f}, margin {cost.margin:,.2f} recorded for {cost.period}",
                      markup=False, highlight=False, soft_wrap=True)
        if cost.source not in known:
            from difflib import get_close_matches

            close = get_close_matches(cost.source, known, n=1)
            err.print(f"no lead has source {cost.source} yet (the cost is kept and counts once leads come with it)"
                      + (f"; did you mean {close[0]}?" if close else "") + f"; known sources: {', '.join(known) or 'none'}",
                      style="yellow", markup=False, highlight=False, soft_wrap=True)
