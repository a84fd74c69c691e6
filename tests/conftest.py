"""Shared fixtures: a real database on both backends, and a clock that moves only when told.

`db_url` is parametrized over SQLite (a file in tmp_path) and PostgreSQL (a fresh database
on 127.0.0.1:5432 created for the test and dropped after it). PostgreSQL is part of the
machine relance is tested on: when it is unreachable the PostgreSQL half fails, it is never skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session

from relance.clock import FrozenClock
from relance.settings import get_settings
from relance.store.db import make_engine, migrate, scratch_postgres

# relance refuses to sign links with a guessable key outside its demo (relance.settings.require_signing_keys):
# the tests, and the processes they start, have a key of their own whatever the developer's environment holds.
TEST_SECRET_KEY = "key-of-the-tests-0123456789-abcdefghij"
os.environ["RELANCE_SECRET_KEY"] = TEST_SECRET_KEY
os.environ.pop("RELANCE_SECRET_KEYS_OLD", None)

PG_ADMIN_URL = os.environ.get("RELANCE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def module_database(request, stack, folder: Path, name: str) -> str:
    """The URL of a database of the backend a module-scoped fixture is parametrized with ("sqlite" or
    "postgresql"): a file in `folder`, or a scratch PostgreSQL database dropped when `stack` closes."""
    if request.param == "sqlite":
        return f"sqlite:///{folder / 'relance.db'}"
    request.getfixturevalue("postgres_reachable")
    return stack.enter_context(scratch_postgres(PG_ADMIN_URL, name))


@pytest.fixture(scope="session")
def postgres_reachable() -> None:
    """Fail (once per session) with what to do when the test PostgreSQL cannot be reached."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is unreachable ({exc}); start it or point RELANCE_TEST_PG_URL at one")
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A URL of an empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'relance.db'}"
        return
    request.getfixturevalue("postgres_reachable")
    with scratch_postgres(PG_ADMIN_URL, "relance_test") as url:
        yield url


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
def moto_server() -> Iterator[tuple[str, int]]:
    """One real moto server on a free loopback port for the test process (fake credentials); its URL and port.
    moto keeps its state per process and tests share it: a test counts only what it sent (its own addresses)."""
    from moto.server import ThreadedMotoServer

    mp = pytest.MonkeyPatch()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        mp.setenv(key, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}", port
    server.stop()
    mp.undo()


@pytest.fixture(scope="session")
def verify_sender(moto_server):
    """`verify_sender(address)`: SES (moto) accepts mail from it (again is harmless)."""
    client = boto3.client("sesv2", region_name="eu-west-1", endpoint_url=moto_server[0])

    def verify(sender: str) -> None:
        try:
            client.create_email_identity(EmailIdentity=sender)
        except client.exceptions.AlreadyExistsException:
            pass

    return verify


@pytest.fixture(scope="session")
def sqs(moto_server):
    """A boto3 SQS client on the moto server."""
    return boto3.client("sqs", region_name="eu-west-1", endpoint_url=moto_server[0])


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path, monkeypatch, db_url) -> Path:
    """A private copy of the shipped scenarios and templates, and a database of each backend."""
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    shutil.copytree(ROOT / "templates" / "emails", tmp_path / "templates")
    monkeypatch.setenv("RELANCE_DATABASE_URL", db_url)
    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(tmp_path / "scenarios"))
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(tmp_path / "templates"))
    monkeypatch.setenv("RELANCE_OUTBOX_DIR", str(tmp_path / "outbox"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()
