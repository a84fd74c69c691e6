"""What pyproject.toml installs: every package of the repository, flows/, tasks/ and bench/ inside relance."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_installed_under_relance():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {"relance": "relance", **{f"relance.{name}": name for name in ("flows", "tasks", "bench")}}
    assert setuptools["package-dir"] == folders
    found = {".".join((package, *init.parent.relative_to(ROOT / folder).parts))
             for package, folder in folders.items() for init in (ROOT / folder).rglob("__init__.py")}
    data = {"relance.email.defaults", "relance.store.migrations", "relance.store.migrations.versions"}  # no __init__.py
    assert sorted(setuptools["packages"]) == sorted(found | data)
