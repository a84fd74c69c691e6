"""Clean edges: the demo does not import the command line, and what only tests or a one-off script use is not in
the runtime package."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import relance

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
