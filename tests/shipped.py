"""The shipped scenarios and templates, copied where a test may change them."""

from __future__ import annotations

import shutil
from pathlib import Path

from relance.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def shipped_copy(tmp_path: Path) -> Settings:
    """Settings over a private copy of the shipped scenarios and templates, with a SQLite file beside them."""
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    shutil.copytree(ROOT / "templates" / "emails", tmp_path / "templates")
    return Settings(scenarios_dir=tmp_path / "scenarios", templates_dir=tmp_path / "templates",
                    database_url=f"sqlite:///{tmp_path / 'relance.db'}")
