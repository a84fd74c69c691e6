"""`relance suppress ...`: the suppression list (addresses relance never mails, leads or not yet)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from relance.cli.common import NOW_HELP, _now, _print_json, _settings, _stored, _when, console, err


suppress_app = typer.Typer(no_args_is_help=True, help="The suppression list: addresses relance never mails, leads or not yet.")


def _reason(reason: str) -> str:
    from relance.suppression import REASONS

    if reason not in REASONS:
        raise typer.BadParameter(f"{reason!r}: choose one of {', '.join(REASONS)}", param_hint="--reason")
    return reason


@suppress_app.command("import")
def suppress_import(
    csv_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV with an email column (optional reason), or one address per line."),
    reason: str = typer.Option("imported", "--reason", help="Reason of rows without one: unsubscribed, bounced, complained, imported, manual."),
    source: Optional[str] = typer.Option(None, "--source", help="Where the list came from (default: import:FILE)."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Never mail these addresses: bad rows reported by row number, good rows kept; their pending emails are cancelled."""
    from sqlmodel import Session

    from relance.importer import read_suppression_list
    from relance.plans import open_store
    from relance.suppression import ListOutcome, suppress_all

    when, settings = _now(now), _settings()  # a bad setting is refused whatever the file holds
    parsed = read_suppression_list(csv_file.read_bytes(), reason=_reason(reason))  # any encoding a lead import reads
    for problem in parsed.problems:
        err.print(f"{csv_file}:{problem}", markup=False, highlight=False, soft_wrap=True)
    outcome = ListOutcome()
    if parsed.rows:  # a file with nothing to suppress (unreadable, no email column) opens no database
        with Session(open_store(settings)) as session:
            outcome = suppress_all(session, [(row.email, row.reason) for row in parsed.rows],
                                   source=source or f"import:{csv_file.name}", now=when)
            session.commit()
    table = Table("suppressed now", "already on the list", "rows with problems")
    table.add_row(str(outcome.suppressed), str(outcome.already),
                  str(len({p.row_number for p in parsed.problems if p.level != "info"})))
    console.print(table)
    if parsed.errors and not parsed.rows:
        raise typer.Exit(1)


@suppress_app.command("add")
def suppress_add(
    email: str = typer.Argument(..., help="The address (a lead or not)."),
    reason: str = typer.Option("manual", "--reason", help="unsubscribed, bounced, complained, imported, manual."),
    source: str = typer.Option("cli:suppress-add", "--source", help="Where the request came from (kept with the entry)."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Never mail this address; its pending emails are cancelled."""
    from sqlmodel import Session

    from relance.importer import checked_email
    from relance.plans import open_store
    from relance.suppression import entry_of, suppress

    when = _now(now)
    try:
        address = checked_email(email)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="EMAIL")
    with Session(open_store(_settings())) as session:
        new = suppress(session, email=address, reason=_reason(reason), source=source, now=when)
        session.commit()
        entry = entry_of(session, address)
    if new:
        console.print(f"{address}: suppressed ({entry['reason']})", markup=False, highlight=False)
    else:
        console.print(f"{address}: already on the list ({entry['reason']}, {entry['source']}, {_when(entry['at'])})",
                      markup=False, highlight=False)


@suppress_app.command("list")
def suppress_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every address on the list: reason, source, when, whether it is a lead."""
    from sqlmodel import Session

    from relance.suppression import list_entries, scope_words

    with Session(_stored()) as session:
        entries = list_entries(session)
    if as_json:
        _print_json(entries)
        return
    table = Table("email", "reason", "source", "since", "stops", "lead", title=f"Suppression list ({len(entries)})")
    for e in entries:
        table.add_row(e["email"], e["reason"], e["source"], _when(e["at"]), scope_words(e["scope"], e["until"]),
                      "yes" if e["lead"] else "no")
    console.print(table)
