"""Engines, migrations and sessions: SQLite (WAL) by default, PostgreSQL in production."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
import re
import uuid

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

MIGRATIONS = Path(__file__).parent / "migrations"
CONNECT_TIMEOUT_S = 10  # a PostgreSQL that does not answer (a firewall drops the packets) is unreachable after this


class StoreUnavailable(RuntimeError):
    """The database cannot be used: its URL is not one, its driver is missing, or it cannot be reached. Says why."""


def make_engine(url: str) -> Engine:
    """An engine tuned for the backend: WAL, foreign keys and a busy timeout on SQLite; StoreUnavailable for a URL
    that names no database relance can open."""
    try:
        return _engine(url)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise StoreUnavailable(f"{_shown(url)} names a database or driver relance cannot load ({_first_line(exc)}): "
                               "write sqlite:///FILE or postgresql+psycopg://USER@HOST:5432/DATABASE") from None
    except (ArgumentError, ValueError) as exc:
        raise StoreUnavailable(f"{_shown(url)} is not a database URL ({_first_line(exc)}): write sqlite:///relance.db or "
                               "postgresql+psycopg://USER@HOST:5432/DATABASE") from None
    except OSError as exc:
        raise StoreUnavailable(f"the folder of the SQLite file {_shown(url)} cannot be created: {exc.strerror or exc}") from None


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    parsed = make_url(url)
    waits = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query else {}
    return create_engine(url, pool_pre_ping=True, connect_args=waits)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _shown(url: str) -> str:
    """The URL without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return repr(re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)[:80])


def reachable(engine: Engine) -> None:
    """Connect once; StoreUnavailable saying why when the database cannot be reached or opened."""
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        reason = _first_line(exc.orig if exc.orig is not None else exc)
        raise StoreUnavailable(f"cannot reach the database {engine.url.render_as_string(hide_password=True)}: "
                               f"{reason}; start it, or check its host, port, user, password and name") from None


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent); StoreUnavailable when the database cannot be reached."""
    reachable(engine)
    command.upgrade(alembic_config(engine), "head")


@contextmanager
def scratch_postgres(admin_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database beside `admin_url`'s, dropped afterwards (tests, benchmarks)."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
