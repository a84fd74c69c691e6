"""Clean edges: the demo does not import the command line, what only tests or a one-off script use is not in the
runtime package, imports point the way docs/architecture.md's module map says, and the map names every module."""

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


@pytest.mark.parametrize("service", ["relance.delivery:deliver", "relance.delivery:deliver_pending"])
def test_delivery_is_handed_the_manager_to_alert_and_never_reads_scoring_yaml_for_it(service):
    """Staff mail that fails for good alerts scoring.yaml's `sales.manager`: the caller's workspace says who."""
    module, name = service.split(":")
    manager = inspect.signature(getattr(importlib.import_module(module), name)).parameters["manager"]
    assert manager.kind is inspect.Parameter.KEYWORD_ONLY and manager.default is inspect.Parameter.empty
    source = (ROOT / "relance" / "delivery.py").read_text(encoding="utf-8") + (ROOT / "relance" / "settling.py").read_text(encoding="utf-8")
    assert "read_scoring" not in source and "load_scoring" not in source


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
    from tests.basis import professional

    settings = Settings(database_url=engine.url.render_as_string(hide_password=False), scenarios_dir=ROOT / "scenarios",
                        templates_dir=ROOT / "templates" / "emails", transport="null", outbox_dir=tmp_path / "outbox")
    workspace = workspace_module.load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    with Session(engine) as session:
        upsert_lead(session, email="lea@acme.example", now=clock.now(), first_name="Léa", fields=professional())
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


def _modules() -> list[Path]:
    """Every module of the engine, the flows, the tasks and the benchmarks (no package face, no migration)."""
    return sorted(p.relative_to(ROOT) for folder in ("relance", "flows", "tasks", "bench")
                  for p in (ROOT / folder).rglob("*.py")
                  if p.name not in ("__init__.py", "__main__.py") and "migrations" not in p.parts)


def _module_map() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return text.split("## Module map", 1)[1].split("\n## ", 1)[0]


def test_the_module_map_names_every_module_with_its_job():
    lines = _module_map().splitlines()
    missing = []
    for path in _modules():
        whole, folder = f"`{path.as_posix()}`", f"`{path.parent.as_posix()}/`"
        if not any(whole in line or (folder in line and f"`{path.name}`" in line) for line in lines):
            missing.append(path.as_posix())
    assert not missing, f"docs/architecture.md's module map does not name: {missing}"


PREFECT_ALLOWED = ("flows/", "tasks/", "bench/", "relance/prefect_adapter.py", "relance/prefect_api.py", "relance/prefect_deploy.py",
                   "relance/cli/runs.py")


def test_only_the_prefect_layer_imports_prefect():
    importers = {p.as_posix() for p in _modules() if any(n == "prefect" or n.startswith("prefect.") for n in _imports(ROOT / p))}
    assert importers and not {p for p in importers if not p.startswith(PREFECT_ALLOWED)}, importers


@pytest.mark.parametrize("core", ["relance/scenario", "relance/engine"])
def test_the_pure_core_imports_only_itself_the_clock_and_text_files(core):
    allowed = ("relance.scenario", "relance.engine", "relance.clock", "relance.textfile")
    reached = {name for p in (ROOT / core).rglob("*.py") for name in _imports(p) if name.split(".")[0] == "relance"}
    assert reached and not {n for n in reached if not n.startswith(allowed)}, reached


@pytest.mark.parametrize("layer", ["relance/store", "relance/email", "relance/scoring"])
def test_the_store_email_and_scoring_layers_import_no_service(layer):
    allowed = ("relance.store", "relance.email", "relance.scoring", "relance.scenario", "relance.engine",
               "relance.clock", "relance.textfile", "relance.settings")
    reached = {name for p in (ROOT / layer).rglob("*.py") for name in _imports(p) if name.split(".")[0] == "relance"}
    assert not {n for n in reached if not n.startswith(allowed)}, reached


def test_the_engine_never_imports_the_flows_or_the_tasks_except_through_its_adapter():
    reach = {p.as_posix() for p in _modules() if p.parts[0] == "relance"
             and any(n.startswith(("relance.flows", "relance.tasks", "relance.bench")) for n in _imports(ROOT / p))}
    assert reach <= {"relance/prefect_adapter.py", "relance/cli/figures.py"}, reach
