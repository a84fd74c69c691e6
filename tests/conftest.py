"""Shared fixtures: a real database on both backends, and a clock that moves only when told.

`db_url` is parametrized over SQLite (a file in tmp_path) and PostgreSQL (a fresh database
on 127.0.0.1:5432 created for the test and dropped after it). With CI=true an unreachable
PostgreSQL fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Iterator

import boto3
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session

from relance.clock import FrozenClock
from relance.store.db import make_engine, migrate

PG_ADMIN_URL = os.environ.get("RELANCE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _admin_engine() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        with _admin_engine().connect() as connection:
            connection.execute(text("select 1"))
        return True
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is unreachable and CI=true: {exc}")
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, postgres_available) -> Iterator[str]:
    """A URL of an empty, migrated database of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'relance.db'}"
        yield url
        return
    if not postgres_available:
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is unreachable (set CI=true to make this a failure)")
    name = f"relance_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on `db_url`."""
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session


@pytest.fixture
def clock() -> FrozenClock:
    """Monday 2026-01-05 09:00 UTC; tests move it with clock.advance(timedelta(...))."""
    return FrozenClock()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sqs():
    """A boto3 SQS client on a real moto server on loopback (fake credentials)."""
    from moto.server import ThreadedMotoServer

    mp = pytest.MonkeyPatch()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        mp.setenv(key, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield boto3.client("sqs", region_name="eu-west-1", endpoint_url=f"http://127.0.0.1:{port}")
    server.stop()
    mp.undo()
