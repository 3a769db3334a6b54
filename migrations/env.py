"""The Alembic environment: runs revisions on an async engine built from `Settings`.

`engine.migrate` hands over a live connection (and the settings) in `config.attributes`;
run by hand (`alembic -c migrations/alembic.ini ...`) it reads `AE_*` settings and opens
its own engine. Either way the options come from `engine.migrate.context_options`, so the
CLI, the tests and hand use all compare and render the same way.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from engine import migrate
from engine.db import normalise_url
from engine.settings import Settings, load_settings

config = context.config
settings: Settings = config.attributes.get("settings") or load_settings()


def run_migrations_offline() -> None:
    """`--sql` mode: render the statements without a database."""
    context.configure(
        url=normalise_url(settings.database_url),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **migrate.context_options(settings),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(connection: Connection) -> None:
    with migrate.sqlite_foreign_keys_off(connection):
        context.configure(connection=connection, **migrate.context_options(settings))
        with context.begin_transaction():
            context.run_migrations()


async def run_async_migrations() -> None:
    engine = migrate.migration_engine(settings)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
