"""Fixtures of the exactly-once tests: a folder with their scenarios, settings over each backend (helpers: harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from relance.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from harness import DRIP, GUIDE, TEMPLATE  # noqa: E402


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("scenarios", "templates"):
        (tmp_path / name).mkdir()
    (tmp_path / "templates" / "hello.mjml").write_text(TEMPLATE, encoding="utf-8")
    (tmp_path / "scenarios" / "drip.yaml").write_text(DRIP, encoding="utf-8")
    (tmp_path / "scenarios" / "guide.yaml").write_text(GUIDE, encoding="utf-8")
    return tmp_path


@pytest.fixture
def settings(folder: Path, db_url: str) -> Settings:
    return Settings(database_url=db_url, scenarios_dir=folder / "scenarios", templates_dir=folder / "templates",
                    outbox_dir=folder / "outbox", transport="file")
