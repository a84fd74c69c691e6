"""What every command shares: its settings, the one way to read a time, the store, the workspace, Prefect
runs, and how output and errors are printed (one sentence, the exit code saying what failed)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup


class _Relance(TyperGroup):
    """Every command: a setting, or the service it points to, that cannot be used (whichever part of the command
    found it) is one sentence naming the setting and what to do, and exit 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from relance.workspace import SetupError
            from relance.settings import SettingError

            if isinstance(exc, (SettingError, SetupError)):
                _setup_failed(str(exc))
            raise


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

    from relance.workspace import SetupError
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


def _workspace(extra: list[Path] | None = None, *, warn: bool = True):
    """The scenarios, validated: every command that needs them calls this first, before any database or Prefect work,
    so a missing scenarios or templates folder is one sentence (what, where, what to do) and exit 1, and so is a
    broken scoring.yaml (every scenario depends on it). A broken scenario file does not stop the others: with `warn`,
    one line on stderr says it does not run and its leads wait."""
    from relance.workspace import ScenarioError, SetupError, load_workspace

    try:
        workspace = load_workspace(_settings(), extra=extra)
    except SetupError as exc:
        _setup_failed(str(exc))
    except ScenarioError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        _fail(f"{len(exc.problems)} problem(s) in scoring.yaml: every scenario depends on it, so nothing runs until "
              "it is fixed; run `relance validate` after fixing them")
    if warn:
        _warn_broken(workspace)
    return workspace


def _warn_broken(workspace) -> None:
    from rich.markup import escape

    for broken in workspace.broken:
        err.print(f"[yellow]warning:[/yellow] {escape(broken.warning())}", soft_wrap=True)


def _extra_files(arguments: list[str] | None) -> list[Path]:
    """SCENARIO arguments that are files (possibly outside the scenarios folder)."""
    return [Path(a) for a in arguments or [] if Path(a).suffix in (".yaml", ".yml") and Path(a).is_file()]


def _resolve(workspace, scenario: str) -> str:
    """A SCENARIO argument: a name from the folder, or a path to a file of it; one whose file is broken is refused
    with its problems."""
    from rich.markup import escape

    from relance.workspace import BrokenArgument, name_for_argument

    try:
        return name_for_argument(workspace, scenario)
    except BrokenArgument as exc:
        for problem in exc.broken.problems:
            err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        _fail(escape(str(exc)))
    except LookupError as exc:
        _fail(str(exc))
