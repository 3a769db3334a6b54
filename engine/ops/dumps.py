"""Consistent dumps of a whole database, and loading them back, per kind of database.

- MariaDB: `mariadb-dump --single-transaction`. Its snapshot and the one the manifest is
  read from are made the same: a read lock on every table (`LOCK TABLES ... READ`, which
  the database's own user may take) holds writes back from before this process opens its
  own snapshot until the dump has opened its own (it has started writing tables), so both
  see the same committed state. Writes wait for that moment only.
- PostgreSQL: `pg_dump --format=custom --snapshot=...` on a snapshot exported from the
  repeatable-read transaction the manifest is read in.
- SQLite: the online backup API into a file, which the manifest is then read from.

Loading runs `mariadb`, `pg_restore --single-transaction` or the backup API the other way.
The client tools read the password from a private option file (MariaDB) or `PGPASSWORD`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from engine.blobs import CHUNK_SIZE
from engine.db import create_engine, dialect_name, normalise_url, unlimited
from engine.ops.archive import OpsError, TableSummary, table_inventory
from engine.settings import Settings

#: What mariadb-dump writes once it has opened its snapshot and begun the first table.
_DUMP_STARTED = b"-- Table structure for table"
LOCK_WAIT_SECONDS = 30
TOOLS = {
    "mysql": ("mariadb-dump", "mariadb", "Debian: apt-get install mariadb-client"),
    "postgresql": ("pg_dump", "pg_restore", "Debian: apt-get install postgresql-client"),
}


class Snapshot(msgspec.Struct, frozen=True):
    """What a dump holds: the schema revision, every table's summary, the blobs it names."""

    revision: str | None
    tables: dict[str, TableSummary]
    blobs: frozenset[str]


def dump_suffix(dialect: str) -> str:
    return {"mysql": "sql.gz", "postgresql": "pgdump", "sqlite": "sqlite"}[dialect]


def _engine(settings: Settings) -> AsyncEngine:
    return create_engine(unlimited(settings), pool_size=2, max_overflow=0)


def _tool(name: str, dialect: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise OpsError(f"{name} is not installed ({TOOLS[dialect][2]})")
    return found


def _last_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"


async def _snapshot_rows(conn: AsyncConnection) -> Snapshot:
    tables = await table_inventory(conn)
    revision = None
    if "alembic_version" in tables:
        rows = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars()
        revision = ",".join(sorted(str(r) for r in rows)) or None
    blobs: frozenset[str] = frozenset()
    if "file" in tables:
        query = sa.text("SELECT DISTINCT sha256 FROM file")
        blobs = frozenset(str(s) for s in (await conn.execute(query)).scalars())
    return Snapshot(revision=revision, tables=tables, blobs=blobs)


# -- client tool arguments -------------------------------------------------------------------


def _mariadb_options(url: URL, private_dir: Path) -> list[str]:
    """Connection options; the password goes into an option file only this user reads."""
    option_file = private_dir / "client.cnf"
    password = (url.password or "").replace("\\", "\\\\").replace('"', '\\"')
    fd = os.open(option_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f'[client]\npassword="{password}"\n' if url.password else "[client]\n")
    options = [f"--defaults-extra-file={option_file}", f"--user={url.username or 'root'}"]
    socket = url.query.get("unix_socket")
    if socket:
        options.append(f"--socket={socket}")
    else:
        options += [f"--host={url.host or 'localhost'}", f"--port={url.port or 3306}"]
    return [*options, "--default-character-set=utf8mb4"]


def _pg_options(url: URL) -> tuple[list[str], dict[str, str]]:
    host = url.host or url.query.get("host") or "localhost"
    options = [f"--host={host}", f"--port={url.port or 5432}"]
    if url.username:
        options.append(f"--username={url.username}")
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = url.password
    return [*options, "--no-password"], env


def _database(url: URL) -> str:
    if not url.database:
        raise OpsError("AE_DATABASE_URL names no database")
    return url.database


# -- dumping ------------------------------------------------------------------------------


async def dump_database(settings: Settings, target: Path) -> Snapshot:
    """Write a consistent dump of the database to `target` and describe what it holds."""
    dialect = dialect_name(settings.database_url)
    if dialect == "sqlite":
        return await _dump_sqlite(settings, target)
    if dialect == "mysql":
        return await _dump_mariadb(settings, target)
    return await _dump_postgresql(settings, target)


def sqlite_path(settings: Settings) -> Path:
    url = normalise_url(settings.database_url)
    if url.database in (None, "", ":memory:") or str(url.database).startswith("file:"):
        raise OpsError("backups need a SQLite database file, not an in-memory database")
    return Path(str(url.database))


def _copy_sqlite(source: Path, target: Path) -> None:
    """SQLite's online backup API: a consistent copy while writers go on; the copy is a
    single file (rollback journal, not WAL) so it travels alone."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


async def _read_sqlite_file(path: Path) -> Snapshot:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await _snapshot_rows(conn)
    finally:
        await engine.dispose()


async def _dump_sqlite(settings: Settings, target: Path) -> Snapshot:
    source = sqlite_path(settings)
    if not source.is_file():
        raise OpsError(f"no database at {source}")
    await asyncio.to_thread(_copy_sqlite, source, target)
    return await _read_sqlite_file(target)


async def _pump_dump(stdout: asyncio.StreamReader, target: Path, started: asyncio.Event) -> None:
    """Copy the dump's output into a gzip file; set `started` once its snapshot is open."""
    tail = b""
    with gzip.open(target, "wb", compresslevel=6) as out:
        while True:
            chunk = await stdout.read(CHUNK_SIZE)
            if not chunk:
                break
            if not started.is_set() and _DUMP_STARTED in tail + chunk:
                started.set()
            tail = chunk[-len(_DUMP_STARTED) :]
            await asyncio.to_thread(out.write, chunk)
    started.set()


async def _dump_mariadb(settings: Settings, target: Path) -> Snapshot:
    url = normalise_url(settings.database_url)
    dump = _tool("mariadb-dump", "mysql")
    engine = _engine(settings)
    try:
        async with engine.connect() as locker, engine.connect() as reader:
            names = await locker.run_sync(lambda c: sa.inspect(c).get_table_names())
            quote = locker.dialect.identifier_preparer.quote
            # Waiting for a lock queues the writers behind it: give up rather than stall.
            await locker.exec_driver_sql(f"SET SESSION lock_wait_timeout={LOCK_WAIT_SECONDS}")
            if names:
                await locker.exec_driver_sql(
                    "LOCK TABLES " + ", ".join(f"{quote(n)} READ" for n in names)
                )
            try:
                await reader.exec_driver_sql(
                    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"
                )
                await reader.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                options = _mariadb_options(url, target.parent)
                proc = await asyncio.create_subprocess_exec(
                    dump,
                    *options,
                    "--single-transaction",
                    "--quick",
                    "--triggers",
                    "--hex-blob",
                    "--no-tablespaces",
                    _database(url),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                assert proc.stdout is not None and proc.stderr is not None
                started = asyncio.Event()
                pump = asyncio.create_task(_pump_dump(proc.stdout, target, started))
                errors = asyncio.create_task(proc.stderr.read())
                await started.wait()
            finally:
                await locker.exec_driver_sql("UNLOCK TABLES")
            snapshot = await _snapshot_rows(reader)
            await pump
            status = await proc.wait()
            message = await errors
            await reader.rollback()
    finally:
        await engine.dispose()
        (target.parent / "client.cnf").unlink(missing_ok=True)
    if status != 0:
        raise OpsError(f"mariadb-dump failed: {_last_line(message)}")
    return snapshot


async def _dump_postgresql(settings: Settings, target: Path) -> Snapshot:
    url = normalise_url(settings.database_url)
    dump = _tool("pg_dump", "postgresql")
    options, env = _pg_options(url)
    engine = _engine(settings)
    try:
        async with engine.connect() as conn:
            reader = await conn.execution_options(isolation_level="REPEATABLE READ")
            exported = (await reader.execute(sa.text("SELECT pg_export_snapshot()"))).scalar()
            proc = await asyncio.create_subprocess_exec(
                dump,
                *options,
                f"--snapshot={exported}",
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--file={target}",
                f"--dbname={_database(url)}",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            (_, errors), snapshot = await asyncio.gather(proc.communicate(), _snapshot_rows(reader))
            await reader.rollback()
    finally:
        await engine.dispose()
    if proc.returncode != 0:
        raise OpsError(f"pg_dump failed: {_last_line(errors)}")
    return snapshot


# -- the target database -----------------------------------------------------------------------


async def existing_tables(settings: Settings) -> list[str]:
    """The tables the target database holds (a SQLite file that does not exist holds none)."""
    if dialect_name(settings.database_url) == "sqlite" and not sqlite_path(settings).is_file():
        return []
    engine = _engine(settings)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    finally:
        await engine.dispose()
    return sorted(str(n) for n in names)


async def drop_tables(settings: Settings, names: list[str]) -> None:
    """Drop `names` from the target (restore --force). SQLite's backup API replaces the
    whole file anyway."""
    dialect = dialect_name(settings.database_url)
    if not names or dialect == "sqlite":
        return
    engine = _engine(settings)
    try:
        async with engine.connect() as conn:
            quote = conn.dialect.identifier_preparer.quote
            listed = ", ".join(quote(n) for n in names)
            if dialect == "mysql":
                await conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
                await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {listed}")
                await conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
            else:
                await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {listed} CASCADE")
            await conn.commit()
    finally:
        await engine.dispose()


def _open_gzip(path: Path) -> gzip.GzipFile:
    return gzip.open(path, "rb")


async def _gunzip_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(_open_gzip, path)
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_SIZE):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def load_database(settings: Settings, source: Path) -> None:
    """Load a dump made by `dump_database` (same kind of database) into the target."""
    dialect = dialect_name(settings.database_url)
    url = normalise_url(settings.database_url)
    if dialect == "sqlite":
        target = sqlite_path(settings)
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_restore_sqlite, source, target)
        return
    if dialect == "mysql":
        client = _tool("mariadb", "mysql")
        try:
            options = _mariadb_options(url, source.parent)
            proc = await asyncio.create_subprocess_exec(
                client,
                *options,
                "--binary-mode",
                _database(url),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            assert proc.stdin is not None and proc.stderr is not None
            reading = asyncio.create_task(proc.stderr.read())
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                async for chunk in _gunzip_chunks(source):
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
                proc.stdin.close()
            status = await proc.wait()
            message = await reading
        finally:
            (source.parent / "client.cnf").unlink(missing_ok=True)
        if status != 0:
            raise OpsError(f"mariadb could not load the dump: {_last_line(message)}")
        return
    restore_tool = _tool("pg_restore", "postgresql")
    options, env = _pg_options(url)
    proc = await asyncio.create_subprocess_exec(
        restore_tool,
        *options,
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        f"--dbname={_database(url)}",
        str(source),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, errors = await proc.communicate()
    if proc.returncode != 0:
        raise OpsError(f"pg_restore could not load the dump: {_last_line(errors)}")


def _restore_sqlite(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
        finally:
            dst.close()
    finally:
        src.close()


async def read_target(settings: Settings) -> Snapshot:
    """The target database as a restore left it, described as a dump is."""
    engine = _engine(settings)
    try:
        async with engine.connect() as conn:
            return await _snapshot_rows(conn)
    finally:
        await engine.dispose()
