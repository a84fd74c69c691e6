"""`relance validate`, `schema`, `simulate`, `preview`: check a workspace, describe its language, project
a scenario's funnel, show an email as a lead would receive it."""

from __future__ import annotations

import contextlib

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from relance.cli.common import (_extra_files, _fail, _workspace, _nothing, _print_json, _resolve, _settings,
                                _setup_failed, console, err)


def validate(
    paths: list[Path] = typer.Argument(None, help="Scenario files or folders (default: RELANCE_SCENARIOS_DIR)."),
    templates: Optional[Path] = typer.Option(None, "--templates", help="Templates folder (default: RELANCE_TEMPLATES_DIR)."),
) -> None:
    """Check scenarios: every problem in every file, as FILE:LINE:COL: step ID: message.

    Then names where each internal template (staff email) comes from: your templates folder, or relance's default."""
    from rich.markup import escape

    from relance.workspace import SetupError, scenario_files, scenarios_folder, validate_paths

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

    templates, lines, problems = TemplateLibrary(folder), [], []
    for name, path, default in templates.internal_in_use():
        where = "relance's default" if default else _shown(path)
        lines.append(f"internal template {name} ({INTERNAL[name]}): {where}")
        if not default:
            problems.extend(f"{_shown(path)}: {problem}" for problem in templates.check(name))
    return lines, problems


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def schema(out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON Schema here instead of stdout."),
           sending: bool = typer.Option(False, "--sending", help="The schema of sending.yaml (the sending policy) instead.")) -> None:
    """The JSON Schema of the scenario language (or of sending.yaml), for editors' autocompletion."""
    from relance.policy import sending_json_schema
    from relance.scenario.schema import scenario_json_schema

    text = json.dumps(sending_json_schema() if sending else scenario_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(text)


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
    from relance.simulation.simulator import simulate as project
    from relance.simulation.rates import parse_rates
    from relance.simulation.funnel import render_report

    workspace = _workspace(_extra_files([scenario]))
    name = _resolve(workspace, scenario)
    try:
        engagement = parse_rates(rates)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rates")
    with console.status(f"simulating {leads} leads over {days} days...") if not as_json else _nothing():
        report = project(workspace.plans[name], leads=leads, days=days, seed=seed, rates=engagement,
                         start=SystemClock().now(), scoring=workspace.scoring)
    if as_json:
        _print_json(report.as_dict())
    else:
        console.print(render_report(report))


def preview(
    template: str = typer.Argument(..., help="Template name (templates/emails/NAME.mjml)."),
    lead: Optional[str] = typer.Option(None, "--lead", help="Fill it in with this stored lead's data (default: a sample lead)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the HTML here (the text part if FILE ends in .txt)."),
    subject: Optional[str] = typer.Option(None, "--subject", help="Subject (Jinja); default: the scenario step that sends it."),
) -> None:
    """Render a template as a lead would receive it: subject and text part here, HTML to --out. Nothing is sent or stored."""
    from relance.email.templates import RenderError, TemplateLibrary
    from relance.plans import open_store
    from relance.preview import preview as render_preview

    from sqlmodel import Session

    settings = _settings()
    try:
        with Session(open_store(settings)) if lead else contextlib.nullcontext() as session:
            shown = render_preview(settings, _workspace(), template, templates=TemplateLibrary(settings.templates_dir),
                                   session=session, email=lead, subject=subject)
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
