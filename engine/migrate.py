"""Schema migrations: Alembic driven in code from `Settings` (`aether migrate`, `makemigrations`).

The environment and revisions live in the `migrations` package, so they ship with the
install and no `alembic.ini` in the working directory is read. Alembic's logging config is
never installed and its console output is silenced: commands print only their result.
`is_migrated` is what `/readyz` asks: two queries and no file-system scan.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from argparse import Namespace
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations
from engine.db import CONNECT_TIMEOUT_SECONDS, create_engine, dialect_name, unlimited
from engine.driver_errors import meaning
from engine.settings import Settings
from models.base import Base, UTCDateTime
from registry.introspect import load_models

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(migrations.__file__).parent
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
VERSION_TABLE = "alembic_version"

_T = TypeVar("_T")


class MigrationError(Exception):
    """The migration history or the database cannot be brought in line; the message says why."""


# -- configuration ------------------------------------------------------------------------


def alembic_config(settings: Settings, *, versions_dir: str | Path | None = None) -> Config:
    """An Alembic `Config` for `settings`, quiet, with the package's script directory.

    `versions_dir` adds a second version location (new revisions go there); the packaged
    history stays readable so the new revision still follows the packaged head.
    """
    config = Config(
        MIGRATIONS_DIR / "alembic.ini",
        stdout=sys.stderr,  # only a command's result may reach stdout
        cmd_opts=Namespace(quiet=True),  # silences Alembic's "Generating ... done" lines
        attributes={"settings": settings},
    )
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if versions_dir is not None:
        locations = [str(VERSIONS_DIR), str(Path(versions_dir).resolve())]
        config.set_main_option("version_locations", os.pathsep.join(locations))
    return config


def target_metadata(settings: Settings) -> sa.MetaData:
    """The shared metadata once every module in `settings.model_modules` is imported."""
    load_models(settings.model_modules)
    return Base.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render `UTCDateTime` by its import path and make the revision import it."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("import models.base")
        return "models.base.UTCDateTime()"
    return False


def context_options(settings: Settings) -> dict[str, Any]:
    """The options `env.py` and `autogenerate_diff` configure Alembic's context with.

    Batch mode is on for every backend so a revision generated on one runs on all three
    (SQLite can only ALTER by copying the table). Server defaults are not compared: the
    models set defaults in Python, and each backend reflects its own spelling of nothing.
    """
    return {
        "target_metadata": target_metadata(settings),
        "version_table": VERSION_TABLE,
        "compare_type": True,
        "compare_server_default": False,
        "render_as_batch": True,
        "render_item": render_item,
    }


def ensure_sqlite_directory(database_url: str) -> None:
    """Create the directory a SQLite file database lives in (`./var` by default)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """On SQLite, run the block with foreign keys off, then check and restore them.

    Batch operations copy a table and drop the original; with foreign keys on, that drop
    would cascade-delete the children's rows. The pragma is ignored inside a transaction,
    hence the commits around it. Other backends run the block unchanged.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
    try:
        yield
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise MigrationError(f"migration left rows with dangling foreign keys: {broken[:5]}")
    finally:
        connection.rollback()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


# -- revisions on disk --------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _heads(script_location: str, version_locations: str | None) -> tuple[str, ...]:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.set_main_option("path_separator", "os")
    if version_locations:
        config.set_main_option("version_locations", version_locations)
    return tuple(sorted(ScriptDirectory.from_config(config).get_heads()))


def _packaged_heads() -> tuple[str, ...]:
    return _heads(str(MIGRATIONS_DIR), None)


def head_revision(settings: Settings) -> str:
    """The id of the latest revision in the packaged history (read from disk once)."""
    heads = _packaged_heads()
    if len(heads) != 1:
        raise MigrationError(
            f"the migration history has {len(heads)} heads ({', '.join(heads) or 'none'}); "
            "it needs exactly one"
        )
    return heads[0]


# -- the database's revision ----------------------------------------------------------------


def _is_missing_table(exc: sa.exc.DBAPIError) -> bool:
    return meaning(exc) == "not_migrated"


async def _stored_revisions(engine: AsyncEngine) -> tuple[str, ...] | None:
    """The rows of `alembic_version`, or None when the table does not exist."""
    query = sa.text(f"SELECT version_num FROM {VERSION_TABLE}")
    async with engine.connect() as conn:
        try:
            rows = (await conn.execute(query)).scalars().all()
        except (sa.exc.ProgrammingError, sa.exc.OperationalError) as exc:
            if _is_missing_table(exc):
                return None
            raise
    return tuple(sorted(str(row) for row in rows))


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision; None when it was never migrated (several heads: comma-joined)."""
    revisions = await _stored_revisions(engine)
    return ",".join(revisions) if revisions else None


async def is_at_head(engine: AsyncEngine, settings: Settings) -> bool:
    """True when the database is at the latest revision. One query; `/readyz` asks this."""
    revisions = await _stored_revisions(engine)
    return bool(revisions) and revisions == _packaged_heads()


async def has_model_schema(engine: AsyncEngine, tables: Iterable[sa.Table]) -> bool:
    """True when the database has every table and column of `tables`.

    One query that names them all and matches no row, so a model added without its
    migration (or a table dropped by hand) is found even when the revision is the latest.
    """
    probes = [
        sa.select(sa.literal(1)).select_from(sa.select(*t.c).where(sa.false()).subquery())
        for t in tables
    ]
    if not probes:
        return True
    async with engine.connect() as conn:
        try:
            await conn.execute(sa.union_all(*probes))
        except sa.exc.DBAPIError as exc:
            if meaning(exc) == "not_migrated":
                return False
            raise
    return True


async def is_migrated(engine: AsyncEngine, settings: Settings, tables: Iterable[sa.Table]) -> bool:
    """At the latest revision and holding every table and column the models have."""
    return await is_at_head(engine, settings) and await has_model_schema(engine, tables)


# -- commands -------------------------------------------------------------------------------


class _PrimaryKeyNameNote(logging.Filter):
    """Drops MariaDB's note that a primary key's name is ignored (it is always `PRIMARY`).

    The naming convention names every primary key (PostgreSQL keeps the name), and asyncmy
    logs the server's note once per table as a warning, which would bury real ones.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "ignored for PRIMARY key" not in record.getMessage()


@contextmanager
def _quiet_driver_notes() -> Iterator[None]:
    driver_logger = logging.getLogger("asyncmy")
    note_filter = _PrimaryKeyNameNote()
    driver_logger.addFilter(note_filter)
    try:
        yield
    finally:
        driver_logger.removeFilter(note_filter)


def migration_engine(settings: Settings) -> AsyncEngine:
    """An engine for schema changes: the database's, without the per-statement time limit.

    Rebuilding a big table can take longer than any request may; a migration cut off half
    way (MariaDB cannot roll DDL back) is worse than a slow one.
    """
    ensure_sqlite_directory(settings.database_url)
    if dialect_name(settings.database_url) != "postgresql":
        return create_engine(unlimited(settings), sqlite_begin=False)
    connect_args = {  # no asyncpg command_timeout either
        "timeout": CONNECT_TIMEOUT_SECONDS,
        "server_settings": {"statement_timeout": "0", "timezone": "UTC"},
    }
    return create_engine(unlimited(settings), connect_args=connect_args)


async def _with_connection(settings: Settings, run: Callable[[Connection], _T]) -> _T:
    """Open a migration engine, call `run` with a sync connection, commit, dispose."""
    engine = migration_engine(settings)
    try:
        with _quiet_driver_notes():
            async with engine.connect() as conn:
                result = await conn.run_sync(run)
                await conn.commit()
                return result
    finally:
        await engine.dispose()


def _shared(config: Config, connection: Connection) -> Config:
    config.attributes["connection"] = connection  # env.py runs on it (connection sharing)
    return config


async def upgrade(
    settings: Settings, revision: str = "head", *, versions_dir: str | Path | None = None
) -> None:
    """Bring the database to `revision` (default the latest); a no-op when already there.

    `versions_dir` adds revisions kept outside the package (tests of `make_migration`).
    """
    config = alembic_config(settings, versions_dir=versions_dir)
    logger.info("upgrading database schema to %s", revision)
    try:
        await _with_connection(settings, lambda c: command.upgrade(_shared(config, c), revision))
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc


async def downgrade(settings: Settings, revision: str) -> None:
    """Take the database back to `revision` (`base` removes every table)."""
    config = alembic_config(settings)
    logger.info("downgrading database schema to %s", revision)
    try:
        await _with_connection(settings, lambda c: command.downgrade(_shared(config, c), revision))
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc


async def autogenerate_diff(settings: Settings) -> list[Any]:
    """The differences Alembic finds between the database and the models (empty: in sync)."""

    def compare(connection: Connection) -> list[Any]:
        options = context_options(settings)
        context = MigrationContext.configure(connection, opts=options)
        return list(compare_metadata(context, options["target_metadata"]))

    return await _with_connection(settings, compare)


def _skip_empty(context: MigrationContext, revision: Any, directives: list[Any]) -> None:
    """Alembic hook: drop an autogenerated revision whose upgrade would do nothing."""
    if directives and all(d.upgrade_ops.is_empty() for d in directives):
        directives[:] = []


def make_migration(
    settings: Settings, message: str, *, versions_dir: str | Path | None = None
) -> str | None:
    """Autogenerate a revision from the models against the database; return its file path.

    The database must be at the latest revision. The revision is written to `versions_dir`
    when given (tests), otherwise into the packaged `migrations/versions`. Call it outside
    a running event loop (it is the body of `aether makemigrations`). When the models and
    the database agree nothing is written and None is returned (unlike Alembic, which
    writes an empty revision).
    """
    if not message.strip():
        raise MigrationError("a migration needs a message (-m)")
    config = alembic_config(settings, versions_dir=versions_dir)
    version_path = str(Path(versions_dir).resolve()) if versions_dir is not None else None
    if version_path is not None:
        Path(version_path).mkdir(parents=True, exist_ok=True)

    def generate(connection: Connection) -> Script | list[Script | None] | None:
        return command.revision(
            _shared(config, connection),
            message=message,
            autogenerate=True,
            version_path=version_path,
            process_revision_directives=_skip_empty,
        )

    try:
        result = asyncio.run(_with_connection(settings, generate))
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc
    _heads.cache_clear()
    scripts = result if isinstance(result, list) else [result]
    paths = [s.path for s in scripts if s is not None]
    if not paths:
        return None
    if len(paths) != 1:
        raise MigrationError(f"expected one new revision, Alembic made {len(paths)}")
    return paths[0]
