"""Clean edges: the demo does not import the command line, and what only tests or a one-off script use is not in
the runtime package."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest

import relance
from tests.units import committed

ROOT = Path(relance.__file__).resolve().parents[1]  # the checkout whose code runs


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update({node.module, *(f"{node.module}.{alias.name}" for alias in node.names)})
    return names


def test_nothing_imports_the_command_line():
    """The CLI sits on top: the demo, the flows and the benchmarks call the services it calls, never the CLI."""
    importers = [path.relative_to(ROOT) for folder in ("relance", "flows", "tasks", "bench")
                 for path in (ROOT / folder).rglob("*.py") if not path.is_relative_to(ROOT / "relance" / "cli")
                 and any(name == "relance.cli" or name.startswith("relance.cli.") for name in _imports(path))]
    assert importers == []


def test_test_doubles_and_one_off_scripts_are_not_shipped():
    from relance.email import transports

    assert not hasattr(transports, "RecordingTransport")  # tests/recording.py
    assert importlib.util.find_spec("relance.demo.generate_leads") is None  # scripts/generate_leads.py


@pytest.mark.parametrize("service", [
    "relance.tick:run_tick_inline", "relance.plans:sync_scenarios", "relance.enrollment:enroll_due",
    "relance.advancing:advance_due",
])
def test_the_services_of_a_tick_are_handed_the_workspace_and_never_read_it_behind_the_callers_back(service):
    """A missing workspace used to be read again from disk, silently: every scenario parsed and validated once more."""
    module, name = service.split(":")
    workspace = inspect.signature(getattr(importlib.import_module(module), name)).parameters["workspace"]
    assert workspace.kind is inspect.Parameter.KEYWORD_ONLY and workspace.default is inspect.Parameter.empty


def test_a_tick_handed_the_workspace_reads_no_scenario(engine, clock, tmp_path, monkeypatch):
    """The caller loads the workspace once; the tick, its enrollment, advancing and delivery use that one."""
    from relance import workspace as workspace_module
    from sqlmodel import Session

    from relance.email.templates import TemplateLibrary
    from relance.ingest import IncomingEvent, ingest_events
    from relance.plans import sync_scenarios
    from relance.settings import Settings
    from relance.store.repo import upsert_lead
    from relance.tick import run_tick_inline

    settings = Settings(database_url=engine.url.render_as_string(hide_password=False), scenarios_dir=ROOT / "scenarios",
                        templates_dir=ROOT / "templates" / "emails", transport="null", outbox_dir=tmp_path / "outbox")
    workspace = workspace_module.load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    with Session(engine) as session:
        upsert_lead(session, email="lea@acme.example", now=clock.now(), first_name="Léa")
        session.commit()
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("downloaded", "lea@acme.example", clock.now(),
                                                  {"asset": "livre-blanc-leads"})], now=clock.now())
    listed: list[object] = []

    def counted(*args, **kwargs):
        listed.append(args)
        return real(*args, **kwargs)

    real = workspace_module.scenario_files
    monkeypatch.setattr(workspace_module, "scenario_files", counted)  # every load_workspace lists the folder first
    report = run_tick_inline(engine, settings, scenario="whitepaper-nurture", now=clock.now(), workspace=workspace, templates=TemplateLibrary(settings.templates_dir))
    assert report.sent == 1  # the tick did its work...
    assert listed == []  # ...without reading the scenarios again


def test_the_flows_are_imported_by_name_in_the_code_not_looked_up_from_a_string():
    """`from relance.flows.tick import tick` is what a reader (and a refactoring tool) follows; importlib hid it."""
    for path in (ROOT / "relance").rglob("*.py"):
        assert "import_module(" not in path.read_text(encoding="utf-8"), path.relative_to(ROOT)
