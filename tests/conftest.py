"""Shared fixtures: a real database on both backends, and a clock that moves only when told.

`db_url` is parametrized over SQLite (a file in tmp_path) and PostgreSQL (a fresh database
on 127.0.0.1:5432 created for the test and dropped after it). PostgreSQL is part of the
machine relance is tested on: when it is unreachable the PostgreSQL half fails, it is never skipped.
A test that uses `engine` gets a copy of a database this test process migrated once (the same
migrations, run once rather than per test); every other test gets an empty one.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
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


class ScratchDatabases:
    """The PostgreSQL databases of one test process: each test gets one of its own, made ahead of it and dropped
    behind it by two threads, so that tests do not wait on CREATE and DROP DATABASE (a second each on a busy disk).

    A "migrated" one is a copy (CREATE DATABASE ... TEMPLATE) of a database migrated once, when first asked for."""

    def __init__(self, admin_url: str) -> None:
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.base = admin_url.rsplit("/", 1)[0]
        self.maker = ThreadPoolExecutor(1, thread_name_prefix="scratch-databases-make")
        self.dropper = ThreadPoolExecutor(1, thread_name_prefix="scratch-databases-drop")
        self.ahead: dict[str, Future] = {}
        self.behind: list[Future] = []
        self.template: str | None = None

    def take(self, kind: str) -> str:
        """The URL of a new database of `kind` ("empty" or "migrated"); the next one is made at once."""
        made = self.ahead.pop(kind, None) or self.maker.submit(self._make, kind)
        name = made.result()
        self.ahead[kind] = self.maker.submit(self._make, kind)
        return f"{self.base}/{name}"

    def give_back(self, url: str) -> None:
        """Drop the database of `url` (made by `take`), in the background."""
        self._drop(url.rsplit("/", 1)[1])

    def _drop(self, name: str) -> None:
        self.behind.append(self.dropper.submit(self._run, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        """Drop every database made here (those made ahead and the template too) and wait for it."""
        for made in self.ahead.values():
            self._drop(made.result())
        for dropped in self.behind:
            dropped.result()
        if self.template is not None:
            self._run(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self.maker.shutdown()
        self.dropper.shutdown()
        self.admin.dispose()

    def _make(self, kind: str) -> str:
        name = f"relance_test_{uuid.uuid4().hex[:12]}"
        if kind == "empty":
            self._run(f'CREATE DATABASE "{name}"')
            return name
        if self.template is None:
            template = f"relance_template_{uuid.uuid4().hex[:12]}"
            self._run(f'CREATE DATABASE "{template}"')
            engine = make_engine(f"{self.base}/{template}")
            migrate(engine)
            engine.dispose()
            self.template = template
        for _ in range(100):  # the template's last connection may take a moment to end on the server
            try:
                self._run(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                return name
            except OperationalError as exc:
                if "being accessed by other users" not in str(exc):
                    raise
                time.sleep(0.05)
        raise RuntimeError(f"the template database {self.template} stayed in use")

    def _run(self, statement: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(statement))


@pytest.fixture(scope="session")
def scratch_databases(postgres_reachable) -> Iterator[ScratchDatabases]:
    databases = ScratchDatabases(PG_ADMIN_URL)
    yield databases
    databases.close()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite file migrated once for this test process; a test that uses `engine` starts from a copy of it."""
    path = tmp_path_factory.mktemp("migrated") / "relance.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the file itself
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A URL of a database of each backend: migrated if the test uses `engine` (which migrates it anyway), else empty."""
    migrated = "engine" in request.fixturenames
    if request.param == "sqlite":
        if migrated:
            shutil.copyfile(request.getfixturevalue("migrated_sqlite"), tmp_path / "relance.db")
        yield f"sqlite:///{tmp_path / 'relance.db'}"
        return
    databases = request.getfixturevalue("scratch_databases")
    url = databases.take("migrated" if migrated else "empty")
    try:
        yield url
    finally:
        databases.give_back(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on `db_url` (already migrated: this checks it is at the newest migration)."""
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
