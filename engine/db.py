"""Database engines: one async SQLAlchemy engine per process, set up per dialect.

MariaDB runs in strict SQL mode with utf8mb4 (nothing silently truncated) and a statement
time limit; SQLite enforces foreign keys; every pool times out instead of hanging. Each
process has two engines: a transactional one for work that spans statements (uploads,
provisioning) and an autocommit one for everything that is a single statement (reads and
most CRUD writes), which costs no BEGIN/COMMIT round trips. Neither pre-pings: a read that
meets a dropped connection is retried once (`repository.read`). Nothing here runs a query
on behalf of a request: that is `repository.py`.
"""

from __future__ import annotations

import weakref
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from engine.settings import Settings

MARIADB_SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO"
)
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SLACK_SECONDS = 5


_JSON_ENCODER = msgspec.json.Encoder()
_JSON_DECODER = msgspec.json.Decoder()


def _json_text(value: Any) -> str:
    return _JSON_ENCODER.encode(value).decode()


def dialect_name(url: str | URL) -> str:
    """`sqlite`, `mysql` (MariaDB) or `postgresql`."""
    return make_url(url).get_backend_name()


def normalise_url(url: str) -> URL:
    """The URL with its async driver and, for MariaDB, utf8mb4 made explicit."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    driver = {
        "sqlite": "aiosqlite",
        "mysql": "asyncmy",
        "mariadb": "asyncmy",
        "postgresql": "asyncpg",
    }
    if backend not in driver:
        raise ValueError(f"unsupported database {backend!r}: use SQLite, MariaDB or PostgreSQL")
    if backend == "mariadb":
        parsed = parsed.set(drivername="mysql+asyncmy")
        backend = "mysql"
    parsed = parsed.set(drivername=f"{backend}+{driver[backend]}")
    if backend == "mysql":
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


#: Seconds a unit of database work may take on each MariaDB engine (by its sync engine).
_DEADLINES: weakref.WeakKeyDictionary[sa.Engine, float | None] = weakref.WeakKeyDictionary()


def deadline(engine: AsyncEngine) -> float | None:
    """How long a unit of work on `engine` may wait for the database, None for no bound.

    MariaDB's own `max_statement_time` cannot end a request stuck on a hung server or
    network; this does (PostgreSQL has asyncpg's `command_timeout`, SQLite no network).
    """
    return _DEADLINES.get(engine.sync_engine)


def unlimited(settings: Settings) -> Settings:
    """`settings` without the per-statement time limit, for the work that must finish
    however big the tables are (migrations, dumps, exports and imports)."""
    return msgspec.structs.replace(settings, db_statement_timeout_ms=0)


def read_timeout_seconds(settings: Settings) -> float | None:
    """How long a client waits for any database answer: the statement limit plus slack.

    None (wait as long as it takes) when statements are unlimited, as for migrations.
    """
    if settings.db_statement_timeout_ms <= 0:
        return None
    return settings.db_statement_timeout_ms / 1000 + READ_TIMEOUT_SLACK_SECONDS


def create_engine(
    settings: Settings,
    *,
    autocommit: bool = False,
    sqlite_begin: bool = True,
    **overrides: Any,
) -> AsyncEngine:
    """An engine for `settings.database_url`, configured for its dialect.

    `autocommit=True` gives the engine for single statements: each commits by itself and a
    connection goes back to the pool without a ROLLBACK. `sqlite_begin=False` leaves SQLite
    transactions to the driver (for migrations, whose PRAGMAs only work outside one).
    """
    url = normalise_url(settings.database_url)
    backend = url.get_backend_name()
    kwargs: dict[str, Any] = {
        "pool_pre_ping": False,
        # JSON columns through msgspec, both ways (the stdlib's json is several times slower).
        "json_serializer": _json_text,
        "json_deserializer": _JSON_DECODER.decode,
    }
    if autocommit:
        kwargs.update(isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True)
    # A fixed pool, no overflow: overflow connections are closed as soon as they are
    # returned, so under load every request beyond the pool opened (and set up) a new one.
    pool = {"pool_size": settings.db_pool_size, "max_overflow": 0}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": settings.db_pool_timeout}
        if url.database in (None, "", ":memory:"):
            kwargs["poolclass"] = NullPool
        else:
            kwargs.update(pool, pool_timeout=settings.db_pool_timeout)
    else:
        kwargs.update(pool, pool_timeout=settings.db_pool_timeout, pool_recycle=1800)
        if backend == "mysql":
            # max_statement_time is enforced by the server: a hung server or network needs a
            # client-side bound too, or a request holding a connection waits forever.
            # The bound is applied around each unit of database work (`deadline()`), not as
            # asyncmy's read_timeout, which costs an asyncio.wait_for task per packet read.
            kwargs["connect_args"] = {
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                # Statements asyncmy keeps prepared per connection (an LRU; binary protocol,
                # no column definitions re-parsed). The server's `max_prepared_stmt_count`
                # (16,382 by default) caps them over all clients: 64 for each of a worker's
                # twice AE_DB_POOL_SIZE connections is 1,280 per worker. 0 turns them off.
                "stmt_cache_size": settings.db_prepared_statements,
            }
        else:
            kwargs["connect_args"] = {
                "timeout": CONNECT_TIMEOUT_SECONDS,
                "command_timeout": read_timeout_seconds(settings),
                "server_settings": {
                    "statement_timeout": str(settings.db_statement_timeout_ms),
                    "timezone": "UTC",
                },
            }
    kwargs.update(overrides)
    engine = create_async_engine(url, **kwargs)
    if backend == "mysql":
        _DEADLINES[engine.sync_engine] = read_timeout_seconds(settings)
    _install_session_setup(
        engine, backend, settings, explicit_begin=sqlite_begin and not autocommit
    )
    return engine


def _install_session_setup(
    engine: AsyncEngine, backend: str, settings: Settings, *, explicit_begin: bool
) -> None:
    sync_engine = engine.sync_engine
    if backend == "sqlite":

        @event.listens_for(sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()
            if explicit_begin:
                # SQLAlchemy's recipe for real SQLite transactions: the driver's own implicit
                # BEGIN handling would turn a SAVEPOINT into the outer transaction and commit
                # on its release; we emit BEGIN ourselves instead. IMMEDIATE takes the write
                # lock up front, so two writers queue (busy_timeout) instead of one failing
                # when it upgrades a read lock.
                dbapi_conn.isolation_level = None

        if explicit_begin:

            @event.listens_for(sync_engine, "begin")
            def _sqlite_begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    elif backend == "mysql":
        statement_seconds = settings.db_statement_timeout_ms / 1000

        @event.listens_for(sync_engine, "connect")
        def _mariadb_session(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute(f"SET SESSION sql_mode='{MARIADB_SQL_MODE}'")
            cursor.execute("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci")
            cursor.execute("SET SESSION time_zone='+00:00'")
            cursor.execute(f"SET SESSION max_statement_time={statement_seconds:.3f}")
            cursor.close()


async def ping(engine: AsyncEngine) -> None:
    """Raise when the database does not answer."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
