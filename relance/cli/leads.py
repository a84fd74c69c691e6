"""`relance import`, `event`, `lead show|export|forget`: leads in, events in, one lead's whole record out or erased."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from relance.cli.common import (NOW_HELP, _at, _fail, _workspace, _listing, _now, _print_json, _settings, _stored,
                                _when, console, err)


lead_app = typer.Typer(no_args_is_help=True, help="Look at leads.")


def import_(
    csv_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV of leads (header row)."),
    source: Optional[str] = typer.Option(None, "--source", help="Source to record for leads without one (and of their basis)."),
    basis: Optional[str] = typer.Option(None, "--basis", help="Lawful basis of the rows without one: consent or "
                                        "legitimate_interest (a professional contact)."),
    wording: Optional[str] = typer.Option(None, "--wording", help="With --basis consent: the text the people accepted."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Import leads from CSV: bad rows reported by row number, good rows kept, duplicates merged.

    UTF-8, UTF-16 (Excel's "Unicode text") or Windows-1252 / Latin-1; `,`, `;` or tab-separated.
    Each lead's lawful basis comes from its `basis` column or --basis (see docs/scenarios.md).
    Exit code 1 when the file has no row to import."""
    from relance.consent import BadBasis, checked_basis

    try:
        basis = None if basis is None else checked_basis(basis)
    except BadBasis as exc:
        raise typer.BadParameter(str(exc), param_hint="--basis") from None
    if wording is not None and basis != "consent":
        raise typer.BadParameter("a wording is a consent's: use it with --basis consent", param_hint="--wording")
    when = _now(now)
    from sqlmodel import Session

    from relance.importer import ImportSummary, import_leads, read_leads_csv
    from relance.plans import open_store

    scoring = _workspace().scoring  # before the store: a missing folder creates no database
    summary = ImportSummary()
    with _progress_bars() as bars:
        parsed = read_leads_csv(csv_file.read_bytes(), source=source, progress=_bar(bars, f"{csv_file.name}: checking rows"),
                                basis=basis, basis_source=f"import:{csv_file.name}", wording=wording)
        for problem in parsed.problems:
            err.print(f"{csv_file}:{problem}", markup=False, highlight=False, soft_wrap=True)
        if parsed.rows:
            with Session(open_store(_settings())) as session:
                # a chunk committed at a time: another import may run beside this one; an interrupted one keeps its chunks
                summary = import_leads(session, parsed, now=when, scoring=scoring, commit=True,
                                       progress=_bar(bars, f"{csv_file.name}: writing leads", len(parsed.rows)))
    table = Table("created", "updated", "rows with problems")
    table.add_row(str(summary.created), str(summary.updated), str(len({p.row_number for p in parsed.problems if p.level != "info"})))
    console.print(table)
    if summary.without_basis and _settings().require_basis != "never":
        err.print(f"{csv_file}: {summary.without_basis} lead(s) of this file have no lawful basis (consent or legitimate "
                  "interest): their marketing emails will not be sent; give a basis column or --basis",
                  markup=False, highlight=False, soft_wrap=True)
    if not parsed.rows:
        raise typer.Exit(1)


def _progress_bars():
    """Progress bars on stderr, gone when done; none unless stderr is a terminal (a pipe or a log gets none)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def _bar(bars, description: str, total: int | None = None):
    """A callback `(done, total=None)` moving a new bar of `bars`."""
    task = bars.add_task(description, total=total)
    return lambda done, of=None: bars.update(task, completed=done, total=of or total)


def event(
    type: str = typer.Argument(..., help="Event type, e.g. downloaded, page_visited, form_submitted."),
    lead: str = typer.Option(..., "--lead", help="The lead's email."),
    prop: list[str] = typer.Option(None, "--prop", help="K=V property (repeatable)."),
    at: Optional[str] = typer.Option(None, "--at", help="When it happened (ISO; default: --now)."),
    key: Optional[str] = typer.Option(None, "--key", help="Idempotency key (default: derived from the content)."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP + " Scores, stages and waits are recorded at this time."),
) -> None:
    """Record one event: scores, triggers scenarios, wakes waiting enrollments."""
    from rich.markup import escape
    from sqlmodel import Session

    from relance.ingest import BadEvent, IncomingEvent, UnknownLead, check_event, ingest_events
    from relance.plans import open_store, sync_scenarios

    properties = {}
    for item in prop or []:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r}: expected K=V", param_hint="--prop")
        k, v = item.split("=", 1)
        properties[k.strip()] = v
    now = _now(now)
    when = _now(at, "--at") if at else now
    incoming = IncomingEvent(type, lead, when, properties, key)
    try:
        check_event(incoming, now)  # before the store is opened: a bad event creates nothing
    except BadEvent as exc:
        options = {"type": "TYPE", "email": "--lead", "occurred_at": "--at" if at else "--now", "idempotency_key": "--key"}
        option = options.get(exc.loc[0]) if len(exc.loc) == 1 else f"--prop {exc.field}".strip()
        _fail(escape(f"{option}: {exc}"))  # what was typed is quoted as typed, never read as rich markup
    settings, workspace = _settings(), _workspace()
    engine = open_store(settings)
    try:
        with Session(engine) as session:
            sync_scenarios(session, workspace=workspace, now=now)
            session.commit()
            result = ingest_events(session, workspace=workspace, events=[incoming], now=now, channel="cli",
                                   machine_click_seconds=settings.machine_click_seconds)
            session.commit()
    except (UnknownLead, BadEvent) as exc:
        _fail(str(exc))
    from relance.prefect_adapter import Announcer

    Announcer()(result.due, channel="cli")  # with a Prefect server, the ticks of the scenarios it made due run now
    console.print(
        f"{'stored' if result.stored else 'already stored (same idempotency key)'}: {type} for {lead}; "
        f"entered {result.enrolled} scenario(s), woke {result.woken} waiting enrollment(s)"
        + ("; suppressed: never mailed again" if result.suppressed else "")
    )


@lead_app.command("show")
def lead_show(
    email: str = typer.Argument(..., help="The lead's email."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Profile, stage, score, grade, consent, enrollments, score ledger, stage history, hand-offs, deals, emails."""
    from sqlmodel import Session

    from relance.leads import lead_summary
    from relance.suppression import scope_words
    from relance.workspace import read_scoring
    from relance.store.tables import PROFILE_FIELDS

    scoring, problems = read_scoring(_settings().scenarios_dir)  # temperature by this folder's scoring.yaml
    with Session(_stored()) as session:
        summary = lead_summary(session, email=email, scoring=scoring)
    if summary is None:
        _fail(f"no lead with email {email!r}")
    if problems:  # the temperature is scoring.yaml's to say: never the defaults' in its place
        summary["temperature"] = None
        err.print(f"temperature not shown: {problems[0]} (`relance validate` lists every problem)", markup=False,
                  highlight=False, soft_wrap=True)
    if as_json:
        _print_json(summary)
        return
    profile = Table(show_header=False, title=f"{summary['first_name']} {summary['last_name']} <{summary['email']}>")
    for k in (*(f for f in PROFILE_FIELDS if f not in ("first_name", "last_name")), "stage", "score", "grade", "temperature"):
        profile.add_row(k, str(summary.get(k) if summary.get(k) is not None else ""))
    listed = summary.get("suppression_list")
    profile.add_row("suppressed", f"{listed['reason']} ({listed['source']}, {_when(listed['at'])}): stops "
                    f"{scope_words(listed['scope'], listed['until'])}" if listed
                    else summary.get("suppressed") or "")
    consent = summary["consent"]
    profile.add_row("consent", _consent_words(consent["current"]) if consent["current"] else "none recorded")
    profile.add_row("lawful basis", _basis_words(summary["basis"]))
    console.print(profile)
    # the listings: one entry per line (two when it has more to say), wrapped at words, never cut; times in UTC
    if consent["history"]:
        _listing("Consent history (newest last)", [
            f"{_at(_instant(r.get('at'))) or r.get('at') or ''}  {'granted' if r.get('granted', True) else 'withdrawn'}  "
            + "  ".join(str(x) for x in (r.get("source"), r.get("form"), f"\"{r['wording']}\"" if r.get("wording") else None,
                                         f"{r.get('channel') or ''} {r.get('event') or ''}".strip()) if x)
            for r in consent["history"]])
    _listing("Enrollments", [
        f"{e['scenario']}  {e['status']}" + (f" at {e['step_id']}" if e["step_id"] else "") + f"  entered {_at(e['entered_at'])}"
        + (f"  due {_at(e['due_at'])}" if e["due_at"] and e["status"] == "active" else "")
        + (f"  left {_at(e['left_at'])}" if e["left_at"] else "") + (f": {e['exit_reason']}" if e["exit_reason"] else "")
        for e in summary["enrollments"]])
    _listing(f"Score {summary['score']}: how it was earned", [
        f"{_at(c['at'])}  {c['points']:+d} = {c['score_after']}  {c['cause']}"
        + (f" ({c['scenario']}/{c['step_id']})" if c["scenario"] and c["step_id"] else "") + (f" {c['detail']}" if c["detail"] else "")
        for c in summary["score_ledger"]])
    _listing("Stage history", [f"{_at(c['at'])}  {c['from']} -> {c['to']}  by {c['by']}" + (f": {c['reason']}" if c["reason"] else "")
                               for c in summary["stage_history"]])
    _listing("Hand-offs (newest first)", [
        f"#{h['id']} {h['status']}  owner {h['owner']}" + (f" (team {h['team']})" if h["team"] else "")
        + f"  opened {_at(h['opened_at'])}, deadline {_at(h['deadline_at'])}"
        + "".join(f"\n    reassigned {_at(m['at'])}: {m['from']} -> {m['to']} by {m['by']}" for m in h["reassignments"])
        + (f"\n    answered {_at(h['answered_at'])} by {h['answered_by']}: " + ", ".join(
            x for x in (h["reason"], h["note"], f"until {h['later_until']:%Y-%m-%d}" if h["later_until"] else "") if x)
           if h["answered_at"] else "")
        for h in summary["handoffs"]])
    if summary["deals"]:
        _listing("Deals", [
            f"{_at(d['closed_at'])}  " + (f"won ({d['kind']})  amount {d['amount']:,.0f}, margin {d['margin']:,.0f}"
                                          if d["outcome"] == "won" else f"lost: {d['reason']}")
            + f"  by {d['by']}" + (f"  \"{d['note']}\"" if d["note"] else "")
            for d in summary["deals"]])
    _listing("Latest emails (newest first)", [
        f"{_at(o['created_at'])}  {o['status']}" + (f" {_at(o['sent_at'])}" if o["sent_at"] else "")
        + f"  {o['scenario'] + '/' + o['step_id'] if o['scenario'] else o['step_id']} ({o['template']})"
        + (f"\n    held back by sending.yaml until {_at(o['hold_until'])}: {o['held']}" if o.get("hold_until") else
           f"\n    sent after sending.yaml held it back ({o['held']})" if o.get("held") and o["status"] == "sent" else "")
        + (f"\n    {o['error']}" if o["error"] else "")
        for o in summary["emails"]])


@lead_app.command("export")
def lead_export(email: str = typer.Argument(..., help="The person's email.")) -> None:
    """Everything relance holds about a person, as JSON (profile, consent, events, emails, hand-offs, deals, scores)."""
    from sqlmodel import Session

    from relance.privacy import export

    with Session(_stored()) as session:
        held = export(session, email=email)
    if held is None:
        _fail(f"no lead with email {email!r}")
    _print_json(held)


@lead_app.command("forget")
def lead_forget(
    email: str = typer.Argument(..., help="The person's email."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Erase a person everywhere; only the address's hash stays, on the suppression list, so it is never mailed again."""
    from sqlmodel import Session

    from relance.privacy import forget

    when = _now(now)
    with Session(_stored()) as session:
        done = forget(session, email=email, now=when)
        session.commit()
    if done is None:
        _fail(f"no lead with email {email!r}")
    console.print(f"{email} was forgotten before: nothing left to erase" if done.already else
                  f"{email} forgotten: lead {done.lead_id} anonymised, the address kept only as a hash on the suppression list",
                  markup=False, highlight=False, soft_wrap=True)


def _instant(value) -> Optional[datetime]:
    """A stored ISO time as a datetime (None when it is missing or unreadable: shown as given)."""
    from relance.clock import parse_instant

    try:
        return parse_instant(str(value)) if value else None
    except ValueError:
        return None


def _basis_words(basis: Optional[dict]) -> str:
    """`legitimate interest (salon-vivatech, 2026-01-05 09:00 UTC, import)`, or why there is none."""
    if basis is None:
        return "none recorded: marketing emails are not sent"
    when = _when(_instant(basis.get("at"))) or str(basis.get("at") or "")
    said = f", \"{basis['wording']}\"" if basis.get("wording") else ""
    return f"{basis['basis'].replace('_', ' ')} ({basis.get('source') or '?'}, {when}{said}, {basis.get('channel') or '?'})"


def _consent_words(record: dict) -> str:
    """`granted (formulaire webinar, 2026-01-05 09:00 UTC)`: the lead's consent now."""
    when = _when(_instant(record.get("at"))) or str(record.get("at") or "")
    return f"{'granted' if record.get('granted', True) else 'withdrawn'} ({record.get('source') or '?'}, {when})"
