"""Alembic environment: the engine comes from `relance.store.db.migrate` (or RELANCE_DATABASE_URL)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import relance.store.tables  # noqa: F401  (registers the tables)

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from relance.settings import get_settings
        from relance.store.db import make_engine

        engine = make_engine(get_settings().database_url)
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
