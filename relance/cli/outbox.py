"""`relance outbox ...`: messages waiting, failed or with an unknown outcome; list, resend, settle them."""

from __future__ import annotations

import json
from typing import Optional

import typer

from relance.cli.common import NOW_HELP, _now, _stored, console, err


outbox_app = typer.Typer(no_args_is_help=True, help=(
    "Messages waiting, failed or with an unknown outcome: list them, resend failed ones, settle unknown ones."))


@outbox_app.command("list")
def outbox_list(
    status: Optional[str] = typer.Option(None, "--status", help="Only this status: pending, sending, unknown, failed, sent or "
                                         "skipped (default: everything not sent yet: failed, unknown, sending, pending)."),
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The outbox's messages that need a look, newest first, with their ids (for `resend` and `resolve`)."""
    from relance.outbox import LISTED, NEEDS_ATTENTION, listing

    if status is not None and status not in LISTED:
        raise typer.BadParameter(f"{status!r}: choose one of {', '.join(LISTED)}", param_hint="--status")
    rows, total = listing(_stored(), statuses=(status,) if status else NEEDS_ATTENTION, limit=limit)
    if as_json:
        console.print_json(json.dumps({"messages": rows, "total": total}, ensure_ascii=False))
        return
    for r in rows:  # two lines each, never cut: the reason in full, greppable by id
        where = f"{r['scenario']}/{r['step_id']}" if r["scenario"] else r["step_id"]
        written = r["created_at"][:16].replace("T", " ") + " UTC" if r["created_at"] else "?"
        console.print(f"outbox {r['id']}  {r['status']}  {r['kind']}  to {r['to']}  {r['template'] or '-'} ({where})  "
                      f"written {written}  {r['attempts']} attempt(s)", markup=False, highlight=False, soft_wrap=True)
        if r["error"]:
            console.print(f"    {r['error']}", markup=False, highlight=False, soft_wrap=True)
    more = f" (the newest {len(rows)} shown: --limit for more)" if total > len(rows) else ""
    console.print(f"{total} message(s){more}", markup=False, highlight=False)


@outbox_app.command("resend")
def outbox_resend(
    ids: list[int] = typer.Argument(..., help="Ids of failed messages, as `relance outbox list --status failed` shows them."),
    note: str = typer.Option("", "--note", help="Why (kept with the message, after the reason it had failed)."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Send failed messages again: each goes back to pending and leaves with the next tick (of any scenario).

    Refused for a message already sent, still pending, skipped, or to a suppressed address, and for one whose
    outcome is unknown (that is `relance outbox resolve`). A resent email to a lead expires if still pending 48 h later."""
    from relance.outbox import resend

    when = _now(now)
    done, problems = resend(_stored(), ids, now=when, note=note)
    for problem in problems:
        err.print(problem, markup=False, highlight=False, soft_wrap=True)
    console.print(f"{len(done)} message(s) set to pending: the next tick sends them" + (f" (outbox {', '.join(map(str, done))})" if done else ""),
                  markup=False, highlight=False)
    if problems:
        raise typer.Exit(1)


@outbox_app.command("resolve")
def outbox_resolve(
    ids: list[int] = typer.Argument(..., help="Outbox ids, as `relance report` or `relance outbox list --status unknown` lists them."),
    verdict: str = typer.Option(..., "--as", help="pending: the next tick sends it; failed: it is not sent."),
    note: str = typer.Option("", "--note", help="Why (kept with the row)."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Settle messages whose outcome is unknown (no answer from the transport, or cut off mid-send), after checking
    the transport's logs. A failed message is sent again with `relance outbox resend`."""
    from relance.outbox import VERDICTS, resolve_cut_off

    if verdict not in VERDICTS:
        raise typer.BadParameter(f"{verdict!r}: choose {' or '.join(VERDICTS)}", param_hint="--as")
    when = _now(now)
    problems = resolve_cut_off(_stored(), ids, verdict=verdict, note=note, now=when)
    for problem in problems:
        err.print(problem, markup=False, highlight=False, soft_wrap=True)
    console.print(f"{len(ids) - len(problems)} message(s) set to {verdict}")
    if problems:
        raise typer.Exit(1)
