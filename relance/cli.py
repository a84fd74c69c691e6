"""`relance ...`: the command line (typer + rich). Commands stay thin: parse, call, print."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text
from typer.core import TyperGroup


class _Relance(TyperGroup):
    """Every command: a setting, or the service it points to, that cannot be used (whichever part of the command
    found it) is one sentence naming the setting and what to do, and exit 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from relance.library import SetupError
            from relance.settings import SettingError

            if isinstance(exc, (SettingError, SetupError)):
                _setup_failed(str(exc))
            raise


app = typer.Typer(cls=_Relance, add_completion=False, no_args_is_help=True,
                  help="relance: B2B lead nurturing, scored and handed to sales.")
lead_app = typer.Typer(no_args_is_help=True, help="Look at leads.")
app.add_typer(lead_app, name="lead")

console = Console()
err = Console(stderr=True)

def _settings():
    """The RELANCE_* settings; a value that cannot be used is one sentence naming it, exit 2."""
    from relance.settings import SettingError, get_settings

    try:
        return get_settings()
    except SettingError as exc:
        _setup_failed(str(exc))


def _signing_settings(*, api: bool = False):
    """The settings of a command that signs or verifies links (and, with `api`, takes bearer tokens): a default,
    short or padded secret is refused in one sentence saying how to make one, exit 2."""
    from relance.settings import SettingError, require_api_token, require_signing_keys

    settings = _settings()
    try:
        require_signing_keys(settings)
        if api:
            require_api_token(settings)
    except SettingError as exc:
        _setup_failed(str(exc))
    return settings


NOW_HELP = "Pretend it is this time (ISO date/time, naive = UTC; default: the wall clock)."


def _now(value: Optional[str], option: str = "--now") -> datetime:
    """The instant an option names (the wall clock when it is not given); a bad one is refused naming `option`."""
    from relance.clock import instant_or_now

    try:
        return instant_or_now(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _at(value: Optional[datetime]) -> str:
    """A time in a listing whose heading says UTC."""
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def _listing(title: str, lines: list[str]) -> None:
    """A titled list, one entry per line: nothing is cut whatever the terminal's width."""
    from rich.padding import Padding

    console.print(f"\n[bold]{title}[/bold]" + (" [dim]· times in UTC[/dim]" if lines else ": none"))
    for line in lines:
        console.print(Padding(Text(line), (0, 0, 0, 2)))


def _print_json(value) -> None:
    """--json output: times in ISO 8601 (2026-03-02T09:00:00+00:00), as the HTTP API writes them."""
    def plain(item):
        return item.isoformat() if isinstance(item, datetime) else str(item)

    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=plain) + "\n")


def _when(value: Optional[datetime]) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _nothing():
    from contextlib import nullcontext

    return nullcontext()


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)  # one sentence, one line: greppable, never cut mid-path
    raise typer.Exit(1)


def _setup_failed(message: str) -> None:
    """The setup is wrong (a setting, a folder it names, a service out of reach): one sentence, exit 2."""
    from rich.markup import escape

    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def _prefect(*, store: bool = False):
    """Flow runs inside: Prefect's local API failing to start or a tick that could not do all its work is one sentence
    and exit 1, a folder missing under the flow exit 2, not a traceback. With `store`, the flows work on
    RELANCE_DATABASE_URL: a database out of reach is said (exit 2) before any flow run starts."""
    from relance.prefect_api import start_early

    if store:
        from relance.plans import open_store

        open_store(_settings()).dispose()
    start_early()  # its start-up overlaps the imports below
    from rich.markup import escape

    from relance.library import SetupError
    from relance.prefect_adapter import PrefectAPIError
    from relance.tick import TickError

    try:
        yield
    except SetupError as exc:
        _setup_failed(str(exc))
    except (PrefectAPIError, TickError) as exc:
        _fail(escape(str(exc)))


def _stored():
    """The database of a command that only reads (or settles) what is stored: a SQLite file that is not
    there is one sentence, not an empty database created in the wrong folder."""
    from sqlalchemy.engine import make_url

    from relance.plans import open_store

    from sqlalchemy.exc import ArgumentError

    settings = _settings()
    try:
        url = make_url(settings.database_url)
    except (ArgumentError, ValueError):
        url = None  # open_store names the setting and what to write
    if url is not None and url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not Path(url.database).exists():
        _setup_failed(f"no database at {Path(url.database).absolute()}: run relance from your project folder, or set "
                      "RELANCE_DATABASE_URL to your database (it is created by `relance import` or `relance event`)")
    return open_store(settings)


def _library(extra: list[Path] | None = None, *, warn: bool = True):
    """The scenarios, validated: every command that needs them calls this first, before any database or Prefect work,
    so a missing scenarios or templates folder is one sentence (what, where, what to do) and exit 1, and so is a
    broken scoring.yaml (every scenario depends on it). A broken scenario file does not stop the others: with `warn`,
    one line on stderr says it does not run and its leads wait."""
    from rich.markup import escape

    from relance.library import ScenarioError, SetupError, load_library

    try:
        library = load_library(_settings(), extra=extra)
    except SetupError as exc:
        _setup_failed(str(exc))
    except ScenarioError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        _fail(f"{len(exc.problems)} problem(s) in scoring.yaml: every scenario depends on it, so nothing runs until "
              "it is fixed; run `relance validate` after fixing them")
    if warn:
        _warn_broken(library)
    return library


def _warn_broken(library) -> None:
    from rich.markup import escape

    for broken in library.broken:
        err.print(f"[yellow]warning:[/yellow] {escape(broken.warning())}", soft_wrap=True)


def _extra_files(arguments: list[str] | None) -> list[Path]:
    """SCENARIO arguments that are files (possibly outside the scenarios folder)."""
    return [Path(a) for a in arguments or [] if Path(a).suffix in (".yaml", ".yml") and Path(a).is_file()]


def _resolve(library, scenario: str) -> str:
    """A SCENARIO argument: a name from the folder, or a path to a file of it; one whose file is broken is refused
    with its problems."""
    from rich.markup import escape

    from relance.library import BrokenArgument, name_for_argument

    try:
        return name_for_argument(library, scenario)
    except BrokenArgument as exc:
        for problem in exc.broken.problems:
            err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        _fail(escape(str(exc)))
    except LookupError as exc:
        _fail(str(exc))


@app.command()
def validate(
    paths: list[Path] = typer.Argument(None, help="Scenario files or folders (default: RELANCE_SCENARIOS_DIR)."),
    templates: Optional[Path] = typer.Option(None, "--templates", help="Templates folder (default: RELANCE_TEMPLATES_DIR)."),
) -> None:
    """Check scenarios: every problem in every file, as FILE:LINE:COL: step ID: message.

    Then names where each internal template (staff email) comes from: your templates folder, or relance's default."""
    from rich.markup import escape

    from relance.library import SetupError, scenario_files, scenarios_folder, validate_paths

    settings = _settings()
    try:
        paths = paths or [scenarios_folder(settings)]
        for path in paths:
            if not path.exists():
                _fail(escape(f"no such file or folder: {path.absolute()}"))
        if templates is not None and not templates.is_dir():
            _fail(escape(f"--templates {templates.absolute()}: no such folder"))
        if not scenario_files(paths):
            _fail(escape(f"no scenario files (*.yaml) in {', '.join(str(p.absolute()) for p in paths)}"))
        problems, names = validate_paths(paths, templates_dir=templates or settings.templates_dir,
                                         settings=None if templates else settings, also_in=Path(settings.scenarios_dir),
                                         webhook_allow=settings.webhook_allow)
    except SetupError as exc:
        _setup_failed(str(exc))
    in_use, template_problems = _internal_templates(templates or settings.templates_dir)
    files = len(scenario_files(paths))
    at_fault, in_files = len({p.path for p in problems}), len(problems)
    problems = [*map(str, problems), *template_problems]
    for problem in problems:
        console.print(problem, markup=False, highlight=False, soft_wrap=True)
    for line in in_use:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if problems:
        sys.stdout.flush()
        err.print(f"[red]{in_files} problem(s)[/red] in {at_fault} of {files} scenario file(s)"
                  + (f"; {len(template_problems)} in internal templates" if template_problems else ""))
        raise typer.Exit(1)
    console.print(f"[green]ok[/green]: {len(names)} scenario(s) valid: {', '.join(sorted(names))}")


def _internal_templates(folder: Path) -> tuple[list[str], list[str]]:
    """Which file each internal template (staff mail relance writes by itself) comes from, one line each, and
    the problems of the folder's own versions (relance's defaults are checked by its tests)."""
    from relance.email.templates import INTERNAL, TemplateLibrary

    library, lines, problems = TemplateLibrary(folder), [], []
    for name, path, default in library.internal_in_use():
        where = "relance's default" if default else _shown(path)
        lines.append(f"internal template {name} ({INTERNAL[name]}): {where}")
        if not default:
            problems.extend(f"{_shown(path)}: {problem}" for problem in library.check(name))
    return lines, problems


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@app.command()
def schema(out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON Schema here instead of stdout.")) -> None:
    """The JSON Schema of the scenario language, for editors' autocompletion."""
    from relance.scenario.schema import scenario_json_schema

    text = json.dumps(scenario_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(text)


@app.command("import")
def import_(
    csv_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV of leads (header row)."),
    source: Optional[str] = typer.Option(None, "--source", help="Source to record for leads without one."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Import leads from CSV: bad rows reported by row number, good rows kept, duplicates merged.

    UTF-8, UTF-16 (Excel's "Unicode text") or Windows-1252 / Latin-1; `,`, `;` or tab-separated.
    Exit code 1 when the file has no row to import."""
    when = _now(now)
    from sqlmodel import Session

    from relance.importer import ImportSummary, import_leads, read_leads_csv
    from relance.plans import open_store

    scoring = _library().scoring  # before the store: a missing folder creates no database
    summary = ImportSummary()
    with _progress_bars() as bars:
        parsed = read_leads_csv(csv_file.read_bytes(), source=source, progress=_bar(bars, f"{csv_file.name}: checking rows"))
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


@app.command()
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
    settings, library = _settings(), _library()
    engine = open_store(settings)
    sync_scenarios(engine, settings, now=now, library=library)
    try:
        result = ingest_events(engine, library, [incoming], now=now, channel="cli",
                               machine_click_seconds=settings.machine_click_seconds)
    except (UnknownLead, BadEvent) as exc:
        _fail(str(exc))
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
    from relance.leads import lead_summary
    from relance.library import read_scoring
    from relance.store.tables import PROFILE_FIELDS

    scoring, problems = read_scoring(_settings().scenarios_dir)  # temperature by this folder's scoring.yaml
    summary = lead_summary(_stored(), email, scoring=scoring)
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
    profile.add_row("suppressed", f"{listed['reason']} ({listed['source']}, {_when(listed['at'])})" if listed
                    else summary.get("suppressed") or "")
    consent = summary["consent"]
    profile.add_row("consent", _consent_words(consent["current"]) if consent["current"] else "none recorded")
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
        + (f"\n    {o['error']}" if o["error"] else "")
        for o in summary["emails"]])


def _instant(value) -> Optional[datetime]:
    """A stored ISO time as a datetime (None when it is missing or unreadable: shown as given)."""
    from relance.clock import parse_instant

    try:
        return parse_instant(str(value)) if value else None
    except ValueError:
        return None


def _consent_words(record: dict) -> str:
    """`granted (formulaire webinar, 2026-01-05 09:00 UTC)`: the lead's consent now."""
    when = _when(_instant(record.get("at"))) or str(record.get("at") or "")
    return f"{'granted' if record.get('granted', True) else 'withdrawn'} ({record.get('source') or '?'}, {when})"


BROKEN_EXIT = 3  # `relance tick` (all): the valid scenarios ticked, at least one scenario file is broken


@app.command()
def tick(
    scenarios: list[str] = typer.Argument(None, help="Scenario names or paths (default: all)."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """One Prefect flow run per scenario: advance what is due. A broken scenario file does not stop the others:
    they tick, it is reported, its leads wait, and the exit code is 3."""
    from relance.prefect_api import start_early

    _now(now)  # a bad --now is refused before Prefect starts
    settings = _settings()
    if settings.scenarios_dir.is_dir() and settings.templates_dir.is_dir():  # else `_library` says so at once
        _signing_settings()  # (a missing folder comes first: in the wrong folder, .env and its key are missing too)
        start_early()  # Prefect's local API comes up while the scenarios load
    from prefect.exceptions import FailedRun

    from relance.prefect_adapter import run_tick

    library = _library(_extra_files(scenarios), warn=False)
    if not library.plans and not library.broken:
        from rich.markup import escape

        _fail(escape(f"no scenario files (*.yaml) in {_settings().scenarios_dir.absolute()}: nothing to tick"))
    names = [_resolve(library, s) for s in scenarios] if scenarios else sorted(library.plans)
    broken = [] if scenarios else library.broken
    columns = {"entered": "entered", "advanced": "due", "batches": "batches", "sent": "sent", "skipped": "skipped",
               "failed": "failed", "waiting": "waiting"}  # as in the tick's log line (docs/ticks.md)
    table = Table(Column("scenario", no_wrap=True), *(Column(c, no_wrap=True, justify="right") for c in columns.values()),
                  title="Tick", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # nothing cut in 80 columns
    with _prefect(store=True):
        for name in names:
            report = run_tick(name, now=now)
            table.add_row(name, *(str(report.get(k, 0)) for k in columns))
        for file in broken:
            if file.name in library.waiting:  # its flow run records why it did not tick (artifact, log), as a schedule's would
                try:
                    run_tick(file.name, now=now)
                except FailedRun:
                    pass  # it ends Failed on purpose: said below
            table.add_row(file.name or str(file.path), "not run", *[""] * (len(columns) - 1))
    console.print(table)
    sys.stdout.flush()
    _warn_broken(library)  # named or not, a broken file is said once the table is out
    if broken:
        raise typer.Exit(BROKEN_EXIT)


flow_app = typer.Typer(no_args_is_help=True, help="Run one scheduled housekeeping flow once.")
app.add_typer(flow_app, name="flow")


@flow_app.command("decay")
def flow_decay(now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP)) -> None:
    """Fade the behaviour score of idle leads, once (a Prefect flow run)."""
    from relance.prefect_adapter import run_flow

    _now(now)  # a bad --now is refused before Prefect starts
    _library()  # and so are missing folders or broken scenarios (the flow reads scoring.yaml)
    with _prefect(store=True):
        result = run_flow("flows.housekeeping", "decay", now=now)
    console.print(f"decay: {result['leads']} idle lead(s) lost {-result['points']} point(s) in all")


suppress_app = typer.Typer(no_args_is_help=True, help="The suppression list: addresses relance never mails, leads or not yet.")
app.add_typer(suppress_app, name="suppress")


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

    from relance.suppression import list_entries

    with Session(_stored()) as session:
        entries = list_entries(session)
    if as_json:
        _print_json(entries)
        return
    table = Table("email", "reason", "source", "since", "lead", title=f"Suppression list ({len(entries)})")
    for e in entries:
        table.add_row(e["email"], e["reason"], e["source"], _when(e["at"]), "yes" if e["lead"] else "no")
    console.print(table)


sales_app = typer.Typer(no_args_is_help=True, help="Sales: the open hand-offs, answers to a handed-off lead, reassignment.")
app.add_typer(sales_app, name="sales")


def _answer(email: str, reply, now: Optional[str]) -> None:
    from sqlmodel import Session

    from relance.plans import open_store
    from relance.sales import SalesError, answer

    at = _now(now)
    scoring = _library().scoring  # before the store: a missing folder creates no database
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
    scoring = _library().scoring  # before the store: a missing folder creates no database
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
app.add_typer(cost_app, name="cost")


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


@app.command()
def report(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    scenario: Optional[str] = typer.Option(None, "--scenario", help="Only this scenario's step tables."),
    period: Optional[str] = typer.Option(None, "--period", help="Economics of this period only: 2026, 2026-Q1 or 2026-03."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP + " Hand-offs past their deadline by then count as breaches."),
) -> None:
    """Funnel, per-step counts, conversion rates, SLA compliance, rejection reasons, CPL / CPA / ROI (per period too)."""
    from sqlmodel import Session

    from relance.deals import parse_period
    from relance.report import build_report, scenarios_on_record

    when = _now(now)
    try:
        within = parse_period(period) if period is not None else None
    except ValueError as exc:
        _fail(f"--period {exc}")
    library = _library()
    with Session(_stored()) as session:
        if scenario is not None:
            known = set(library.plans) | scenarios_on_record(session)
            if scenario not in known:
                _fail(f"--scenario {scenario!r}: no such scenario (known: {', '.join(sorted(known)) or 'none'})")
        figures = build_report(session, now=when, scenario=scenario, orders={n: p.order for n, p in library.plans.items()},
                               period=within)
    if as_json:
        _print_json(figures)
        return
    from relance.report_view import print_report

    print_report(figures, console, err)


outbox_app = typer.Typer(no_args_is_help=True, help=(
    "Messages waiting, failed or with an unknown outcome: list them, resend failed ones, settle unknown ones."))
app.add_typer(outbox_app, name="outbox")


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


@app.command("ses-events")
def ses_events(
    queue_url: str = typer.Option(..., "--queue-url", help="The SQS queue SES events arrive in (through SNS)."),
    once: bool = typer.Option(False, "--once", help="Stop when the queue is empty (default: keep listening)."),
    dead_letter_url: Optional[str] = typer.Option(None, "--dead-letter-url", help="Where unusable messages go."),
    set_aside_dir: Path = typer.Option(Path("ses-set-aside"), "--set-aside-dir", help="Where they go without a dead-letter queue."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Drain SES event notifications from SQS: opens, clicks, deliveries, bounces, complaints."""
    import boto3

    from relance.plans import open_store
    from relance.ses_events import drain

    from botocore.config import Config

    from relance.clock import FrozenClock, SystemClock

    clock = FrozenClock(_now(now)) if now else SystemClock()  # --now: every message at that time; else each at its own
    settings, library = _settings(), _library()
    wait = 1 if once else 20
    sqs = boto3.client("sqs", region_name=settings.ses_region, endpoint_url=settings.ses_endpoint_url,
                       config=Config(connect_timeout=settings.ses_timeout, read_timeout=wait + settings.ses_timeout,
                                     retries={"max_attempts": 2}))
    report = drain(open_store(settings), library, sqs, queue_url, clock=clock, once=once,
                   dead_letter_url=dead_letter_url, set_aside_dir=set_aside_dir, wait_seconds=wait,
                   machine_click_seconds=settings.machine_click_seconds)
    for reason in report.reasons:
        err.print(f"set aside: {reason}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"{report.stored} stored, {report.duplicates} already stored, {report.suppressed} suppressed, "
                  f"{report.set_aside} set aside, {report.deleted} removed from the queue")


@flow_app.command("sla")
def flow_sla(now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP)) -> None:
    """Flag handoffs past their SLA, once (a Prefect flow run)."""
    from relance.prefect_adapter import run_flow

    _now(now)
    _library()  # missing folders or broken scenarios: refused before Prefect starts
    _signing_settings()  # it sends staff email
    with _prefect(store=True):
        r = run_flow("flows.housekeeping", "sla", now=now)
    console.print(f"sla: {r['open']} open hand-off(s); {r['target_missed']} newly past target, {r['deadline_missed']} newly past deadline")


@flow_app.command("reengage")
def flow_reengage(now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP)) -> None:
    """Re-engage the "later" leads whose date has come, once (a Prefect flow run)."""
    from relance.prefect_adapter import run_flow

    _now(now)
    _library()  # missing folders or broken scenarios: refused before Prefect starts
    _signing_settings()  # it sends staff email
    with _prefect(store=True):
        r = run_flow("flows.housekeeping", "reengage", now=now)
    console.print(f"reengage: {r['enrolled']} lead(s) enrolled")


@app.command()
def simulate(
    scenario: str = typer.Argument(..., help="Scenario name or path."),
    leads: int = typer.Option(1000, "--leads", min=1),
    days: int = typer.Option(30, "--days", min=1),
    seed: int = typer.Option(1, "--seed"),
    rates: Optional[str] = typer.Option(None, "--rates", help="Engagement rates, e.g. open=0.4,click=0.1,download=0.05"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Project a scenario's funnel on a virtual clock with synthetic engagement (no database)."""
    from relance.clock import SystemClock
    from relance.simulate import simulate as project
    from relance.simulation.rates import parse_rates
    from relance.simulation.report import render_report

    library = _library(_extra_files([scenario]))
    name = _resolve(library, scenario)
    try:
        engagement = parse_rates(rates)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rates")
    with console.status(f"simulating {leads} leads over {days} days...") if not as_json else _nothing():
        report = project(library.plans[name], leads=leads, days=days, seed=seed, rates=engagement,
                         start=SystemClock().now(), scoring=library.scoring)
    if as_json:
        _print_json(report.as_dict())
    else:
        console.print(render_report(report))


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes: under 3 minutes."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (figures, goals, details)."),
) -> None:
    """Throughput, scaling and memory, each ratio measured side by side in this run (see bench/)."""
    from bench.run import FULL, QUICK, run
    from relance.prefect_adapter import flow_api

    with _prefect(), flow_api():  # the naive design's flow runs, on the same local API as a tick's
        figures = run(QUICK if quick else FULL, progress=lambda step: err.print(f"[dim]bench:[/] {step}"))
    if as_json:
        sys.stdout.write(json.dumps(figures, indent=2) + "\n")
        return
    _print_bench(figures)


def _print_bench(figures: dict, out: Console | None = None) -> None:
    out = out or console
    goals = figures["goals"]
    table = Table("figure", "value", "goal", "met", title="relance bench")
    for name, value in figures.items():
        if name in ("goals", "details"):
            continue
        goal = goals.get(name)
        met = "" if goal is None else ("yes" if goal["met"] else "[red]no[/]")
        table.add_row(name, f"{value:,}", goal["goal"] if goal else "", met)
    m = figures["details"]["machine"]
    table.caption = f"{m['cpus']} CPUs, {m['processor']}, {m['system']}, Python {m['python']}"
    out.print(table)


@app.command()
def preview(
    template: str = typer.Argument(..., help="Template name (templates/emails/NAME.mjml)."),
    lead: Optional[str] = typer.Option(None, "--lead", help="Fill it in with this stored lead's data (default: a sample lead)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the HTML here (the text part if FILE ends in .txt)."),
    subject: Optional[str] = typer.Option(None, "--subject", help="Subject (Jinja); default: the scenario step that sends it."),
) -> None:
    """Render a template as a lead would receive it: subject and text part here, HTML to --out. Nothing is sent or stored."""
    from relance.email.templates import RenderError
    from relance.plans import open_store
    from relance.preview import preview as render_preview

    settings = _settings()
    try:
        shown = render_preview(settings, _library(), template, engine=open_store(settings) if lead else None, email=lead,
                               subject=subject)
    except (LookupError, RenderError) as exc:
        _fail(str(exc))
    from relance.email.templates import INTERNAL

    where = (f"subject from {shown.used_by}" if shown.used_by else
             f"relance's staff email ({INTERNAL[template]})" if template in INTERNAL else "no scenario sends it")
    err.print(f"[dim]{template} for {shown.lead}; {where}[/]", soft_wrap=True)
    console.print(f"Subject: {shown.email.subject}\n", markup=False, highlight=False)
    console.print(shown.email.text, markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        out.write_text(shown.email.text if out.suffix == ".txt" else shown.email.html, encoding="utf-8")
        err.print(f"wrote {out}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
) -> None:
    """The HTTP API: tracking, one-click unsubscribe, event intake (OpenAPI docs at /docs)."""
    import uvicorn

    from relance.api.app import create_app
    from relance.plans import open_store

    library, settings = _library(), _signing_settings(api=True)  # at start-up: a missing folder is refused now, not at the first request
    api = create_app(settings, engine=open_store(settings), library=library)
    uvicorn.run(api, host=host, port=port, proxy_headers=True)


@app.command()
def demo(directory: Path = typer.Option(Path("demo-run"), "--dir", help="Where to put the demo database and outbox.")) -> None:
    """The main job on embedded defaults: leads, 30 days of engagement, real Prefect ticks, an outbox."""
    from relance.demo.run import run_demo

    _library()  # the demo runs the project's scenarios: refused before it clears DIR when they are missing
    with _prefect():
        run_demo(directory, console=console)


if __name__ == "__main__":  # pragma: no cover
    app()
