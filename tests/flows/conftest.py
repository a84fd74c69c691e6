"""Prefect for in-process flow tests: relance's local Prefect API, on a private home and database.

One API per pytest(-xdist) worker, started by relance (`relance.prefect_api`) rather than Prefect's
own ephemeral server, so that a killed worker leaves no server behind either.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Prefect settings whose state (home, database) lives in a temp folder, and no developer's API."""
    import prefect.main  # noqa: F401 - sets Prefect's logging up now, on the session's stderr: set up first inside a
    # CliRunner call, its console handler would keep that call's stream, closed once the call returns
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings(
        updates={
            "home": home,
            "server.database.connection_url": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "server.analytics_enabled": False,
            "server.ui.enabled": False,
        },
        restore_defaults={PREFECT_API_URL},  # a developer's PREFECT_API_URL must not receive test runs
    ):
        yield home


@pytest.fixture(scope="session", autouse=True)
def prefect_api(prefect_home: Path) -> Iterator[str]:
    """Every flow run of this worker goes to one local API on `prefect_home`; stopped at the session's end."""
    from relance.prefect_adapter import flow_api, stop_local_api
    from prefect.settings import PREFECT_API_URL

    try:
        with flow_api():
            yield PREFECT_API_URL.value()
    finally:
        stop_local_api()
