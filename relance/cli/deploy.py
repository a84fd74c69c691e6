"""`relance deploy`: the Prefect deployments and prefect.yaml made to match the scenarios folder."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from relance.cli.common import _settings, _setup_failed, _warn_broken, _workspace, console, err

RECORD = "prefect.yaml"


def deploy(
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change on the server and in prefect.yaml; change nothing."),
    yaml_only: bool = typer.Option(False, "--yaml", help="Only rewrite prefect.yaml from the scenarios folder; leave the server alone."),
) -> None:
    """Make the Prefect server's deployments match the scenarios folder: one tick per scenario (its `schedule:`, and
    within seconds of the events it waits for), the housekeeping flows, the SES-events drain; rewrite prefect.yaml."""
    from relance.deployments import wanted
    from relance.prefect_deploy import DeployError, apply

    settings, workspace = _settings(), _workspace()
    _warn_broken(workspace)
    deployments = wanted(workspace, ses_queue_url=settings.ses_queue_url)
    _record(workspace, settings.scenarios_dir, dry_run=dry_run, required=yaml_only)
    if yaml_only:
        return
    try:
        changes = apply(deployments, folder=Path.cwd(), dry_run=dry_run)
    except DeployError as exc:
        _setup_failed(str(exc))
    table = Table("deployment", "change", "what", box=box.SIMPLE, title="Would change" if dry_run else None)
    for change in changes:
        table.add_row(change.name, change.action, "; ".join(change.details))
    console.print(table)
    done = {action: sum(c.action == action for c in changes) for action in ("create", "update", "unchanged", "pause")}
    words = {"create": "created", "update": "updated", "unchanged": "unchanged", "pause": "paused"}
    console.print(("would be: " if dry_run else "") + ", ".join(f"{n} {words[a]}" for a, n in done.items() if n)
                  + ("" if dry_run else "; run the flows with `relance worker` (or `prefect worker start --pool relance`)"))
    if not settings.ses_queue_url:
        err.print("ses-events: its schedule is off: set RELANCE_SES_QUEUE_URL (here and on the worker) to drain SES events")


def _record(workspace, scenarios_dir: Path, *, dry_run: bool, required: bool) -> None:
    """Rewrite ./prefect.yaml when it no longer says what ./scenarios calls for. It records the project's own
    folder only: deploying another one (RELANCE_SCENARIOS_DIR) leaves it alone, unless --yaml asks for it."""
    from relance.deployments import prefect_yaml, wanted

    record = Path.cwd() / RECORD
    if not required and Path(scenarios_dir).resolve() != (Path.cwd() / "scenarios").resolve():
        console.print(f"{RECORD}: left alone (it records ./scenarios; these deployments are of {scenarios_dir})")
        return
    text = prefect_yaml(wanted(workspace, ses_queue_url=None), prefect_version=version("prefect"))
    current = record.read_text(encoding="utf-8") if record.exists() else None
    if current == text:
        console.print(f"{RECORD}: up to date")
        return
    if not dry_run:
        record.write_text(text, encoding="utf-8")
    console.print(f"{RECORD}: {'would be ' if dry_run else ''}{'rewritten' if current else 'written'} from {scenarios_dir}")
