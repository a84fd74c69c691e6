"""Prefect for in-process flow tests: the ephemeral API, on a private home and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Runs flows against an ephemeral Prefect API whose state lives in a temp folder."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings(
        updates={
            "home": home,
            "server.database.connection_url": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "server.analytics_enabled": False,
            "server.ui.enabled": False,
            # two busy cores: the first flow run starts the ephemeral server, give it time
            "server.ephemeral.startup_timeout_seconds": 90,
        },
        restore_defaults={PREFECT_API_URL},  # a developer's PREFECT_API_URL must not receive test runs
    ):
        yield home
