"""`relance tick`, `flow ...`, `ses-events`, `serve`, `demo`: what runs relance: the ticks that move enrollments along,
the housekeeping flows, the SES event drain, the HTTP API, and the demo of it all."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Column, Table

from relance.cli.common import (NOW_HELP, _extra_files, _fail, _workspace, _now, _prefect, _resolve, _settings,
                                _signing_settings, _warn_broken, console, err)


BROKEN_EXIT = 3  # `relance tick` (all): the valid scenarios ticked, at least one scenario file is broken


def tick(
    scenarios: list[str] = typer.Argument(None, help="Scenario names or paths (default: all)."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """One Prefect flow run per scenario: advance what is due. A broken scenario file does not stop the others:
    they tick, it is reported, its leads wait, and the exit code is 3."""
    from relance.prefect_api import start_early

    _now(now)  # a bad --now is refused before Prefect starts
    settings = _settings()
    if settings.scenarios_dir.is_dir() and settings.templates_dir.is_dir():  # else `_workspace` says so at once
        _signing_settings()  # (a missing folder comes first: in the wrong folder, .env and its key are missing too)
        start_early()  # Prefect's local API comes up while the scenarios load
    from prefect.exceptions import FailedRun

    from relance.prefect_adapter import run_tick

    workspace = _workspace(_extra_files(scenarios), warn=False)
    if not workspace.plans and not workspace.broken:
        from rich.markup import escape

        _fail(escape(f"no scenario files (*.yaml) in {_settings().scenarios_dir.absolute()}: nothing to tick"))
    names = [_resolve(workspace, s) for s in scenarios] if scenarios else sorted(workspace.plans)
    broken = [] if scenarios else workspace.broken
    columns = {"entered": "entered", "advanced": "due", "batches": "batches", "sent": "sent", "skipped": "skipped",
               "failed": "failed", "waiting": "waiting"}  # as in the tick's log line (docs/ticks.md)
    table = Table(Column("scenario", no_wrap=True), *(Column(c, no_wrap=True, justify="right") for c in columns.values()),
                  title="Tick", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # nothing cut in 80 columns
    with _prefect(store=True):
        for name in names:
            report = run_tick(name, now=now)
            table.add_row(name, *(str(report.get(k, 0)) for k in columns))
        for file in broken:
            if file.name in workspace.waiting:  # its flow run records why it did not tick (artifact, log), as a schedule's would
                try:
                    run_tick(file.name, now=now)
                except FailedRun:
                    pass  # it ends Failed on purpose: said below
            table.add_row(file.name or str(file.path), "not run", *[""] * (len(columns) - 1))
    console.print(table)
    sys.stdout.flush()
    _warn_broken(workspace)  # named or not, a broken file is said once the table is out
    if broken:
        raise typer.Exit(BROKEN_EXIT)


flow_app = typer.Typer(no_args_is_help=True, help="Run one scheduled housekeeping flow once.")


def _housekeeping(name: str, now: Optional[str], *, sends_mail: bool = False) -> dict:
    """One run of a housekeeping flow: a bad --now, missing folders, broken scenarios and (for a flow that mails)
    a guessable signing key are refused before Prefect starts."""
    from relance.prefect_adapter import run_flow

    _now(now)
    _workspace()
    if sends_mail:
        _signing_settings()
    with _prefect(store=True):
        return run_flow("relance.flows.housekeeping", name, now=now)


@flow_app.command("decay")
def flow_decay(now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP)) -> None:
    """Fade the behaviour score of idle leads, once (a Prefect flow run)."""
    result = _housekeeping("decay", now)
    console.print(f"decay: {result['leads']} idle lead(s) lost {-result['points']} point(s) in all")


@flow_app.command("sla")
def flow_sla(now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP)) -> None:
    """Flag handoffs past their SLA, once (a Prefect flow run)."""
    r = _housekeeping("sla", now, sends_mail=True)
    console.print(f"sla: {r['open']} open hand-off(s); {r['target_missed']} newly past target, {r['deadline_missed']} newly past deadline")


@flow_app.command("reengage")
def flow_reengage(now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP)) -> None:
    """Re-engage the "later" leads whose date has come, once (a Prefect flow run)."""
    r = _housekeeping("reengage", now, sends_mail=True)
    console.print(f"reengage: {r['enrolled']} lead(s) enrolled")


def ses_events(
    queue_url: Optional[str] = typer.Option(None, "--queue-url", help="The SQS queue SES events arrive in (through SNS); default RELANCE_SES_QUEUE_URL."),
    once: bool = typer.Option(False, "--once", help="Stop when the queue is empty (default: keep listening)."),
    dead_letter_url: Optional[str] = typer.Option(None, "--dead-letter-url", help="Where unusable messages go."),
    set_aside_dir: Path = typer.Option(Path("ses-set-aside"), "--set-aside-dir", help="Where they go without a dead-letter queue."),
    now: Optional[str] = typer.Option(None, "--now", help=NOW_HELP),
) -> None:
    """Drain SES event notifications from SQS: opens, clicks, deliveries, bounces, complaints."""
    import boto3

    from relance.plans import open_store
    from sqlmodel import Session

    from relance.prefect_adapter import Announcer
    from relance.ses_events import drain

    from botocore.config import Config

    from relance.clock import FrozenClock, SystemClock

    clock = FrozenClock(_now(now)) if now else SystemClock()  # --now: every message at that time; else each at its own
    settings, workspace = _settings(), _workspace()
    queue_url = queue_url or settings.ses_queue_url
    dead_letter_url = dead_letter_url or settings.ses_dead_letter_url
    if not queue_url:
        from relance.settings import SettingError

        raise SettingError("no queue to drain: give --queue-url URL or set RELANCE_SES_QUEUE_URL (the queue URL from "
                           "infra/ses-events.cfn.yaml's outputs)")
    wait = 1 if once else 20
    sqs = boto3.client("sqs", region_name=settings.ses_region, endpoint_url=settings.ses_endpoint_url,
                       config=Config(connect_timeout=settings.ses_timeout, read_timeout=wait + settings.ses_timeout,
                                     retries={"max_attempts": 2}))
    with Session(open_store(settings)) as session:  # drain commits each message before it leaves the queue
        report = drain(session, workspace=workspace, sqs=sqs, queue_url=queue_url, clock=clock, once=once,
                       dead_letter_url=dead_letter_url, set_aside_dir=set_aside_dir, wait_seconds=wait,
                       machine_click_seconds=settings.machine_click_seconds, announce=Announcer())
    for reason in report.reasons:
        err.print(f"set aside: {reason}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"{report.stored} stored, {report.duplicates} already stored, {report.suppressed} suppressed, "
                  f"{report.set_aside} set aside, {report.deleted} removed from the queue")


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
) -> None:
    """The HTTP API: tracking, one-click unsubscribe, event intake (OpenAPI docs at /docs)."""
    import uvicorn

    from relance.api.app import create_app
    from relance.plans import open_store

    workspace, settings = _workspace(), _signing_settings(api=True)  # at start-up: a missing folder is refused now, not at the first request
    from sqlmodel import Session

    from relance.clock import SystemClock
    from relance.plans import sync_scenarios
    from relance.prefect_adapter import Announcer

    engine = open_store(settings)
    with Session(engine) as session:  # the scenarios' triggers must be on record before the first event comes in
        sync_scenarios(session, workspace=workspace, now=SystemClock().now())
        session.commit()
    api = create_app(settings, engine=engine, workspace=workspace, announce=Announcer(in_background=True))
    uvicorn.run(api, host=host, port=port, proxy_headers=True)


def demo(directory: Path = typer.Option(Path("demo-run"), "--dir", help="Where to put the demo database and outbox.")) -> None:
    """The main job on embedded defaults: leads, 30 days of engagement, real Prefect ticks, an outbox."""
    from relance.demo.run import run_demo

    _workspace()  # the demo runs the project's scenarios: refused before it clears DIR when they are missing
    with _prefect():
        run_demo(directory, console=console)
