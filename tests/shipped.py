"""The shipped scenarios and templates, copied where a test may change them."""

from __future__ import annotations

import shutil
from pathlib import Path

from relance.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[1]


def shipped_copy(tmp_path: Path) -> Settings:
    """Settings over a private copy of the shipped scenarios and templates, with a SQLite file beside them."""
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    shutil.copytree(ROOT / "templates" / "emails", tmp_path / "templates")
    return Settings(scenarios_dir=tmp_path / "scenarios", templates_dir=tmp_path / "templates",
                    database_url=f"sqlite:///{tmp_path / 'relance.db'}")


def shipped_environment(tmp_path: Path, monkeypatch, db_url: str, **more: str) -> Settings:
    """As `shipped_copy`, told through the environment (RELANCE_*) so the workspace, the CLI and the API all read it;
    `more` adds variables. The caller clears `get_settings`' cache after its test."""
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    shutil.copytree(ROOT / "templates" / "emails", tmp_path / "templates")
    for name, value in {"RELANCE_DATABASE_URL": db_url, "RELANCE_SCENARIOS_DIR": str(tmp_path / "scenarios"),
                        "RELANCE_TEMPLATES_DIR": str(tmp_path / "templates"), "RELANCE_OUTBOX_DIR": str(tmp_path / "outbox"),
                        **more}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return Settings()
