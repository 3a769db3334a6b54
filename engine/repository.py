"""The only module that awaits SQL on behalf of requests; driver errors become domain errors.

`translate_errors()` maps unique and foreign-key violations (MariaDB 1062/1451/1452,
PostgreSQL 23505/23503, SQLite constraint messages) to 409/422, and lost connections or pool
timeouts to 503, so no driver detail ever reaches a client.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.db import deadline
from engine.errors import (
    AetherError,
    ConflictError,
    ServiceUnavailableError,
    ValidationError,
)
from engine.realtime import publish_noted
from registry.descriptors import ObjectType

logger = logging.getLogger(__name__)
T = TypeVar("T")

_UNIQUE_CODES = {"1062", "23505"}
_FK_CODES = {"1451", "1452", "23503"}
_CONSTRAINT_RE = re.compile(r"(uq_[a-z0-9_]+|fk_[a-z0-9_]+)")
_SQLITE_UNIQUE_RE = re.compile(r"UNIQUE constraint failed: ([\w., ]+)")


class IdCollisionError(Exception):
    """A freshly generated public id already exists (astronomically rare; retried)."""


def _code(exc: sa_exc.DBAPIError) -> str:
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # MariaDB: the error number (its SQLSTATE is 23000)
        return str(args[0])
    for attr in ("sqlstate", "pgcode"):
        value = getattr(orig, attr, None)
        if value:
            return str(value)
    text = str(orig)
    if "UNIQUE constraint failed" in text:
        return "23505"
    if "FOREIGN KEY constraint failed" in text:
        return "23503"
    return ""


def unique_fields(exc: sa_exc.DBAPIError, obj: ObjectType | None) -> list[str]:
    """The public field names a unique violation names, account_id left out."""
    text = str(exc.orig)
    columns: list[str] = []
    match = _SQLITE_UNIQUE_RE.search(text)
    if match:
        columns = [part.strip().split(".")[-1] for part in match.group(1).split(",")]
    else:
        name = _CONSTRAINT_RE.search(text)
        if name and obj is not None:
            suffix = name.group(1).removeprefix(f"uq_{obj.table}_")
            known = sorted((f.column for f in obj.fields), key=len, reverse=True)
            known.append("account_id")
            while suffix:
                for col in known:
                    if suffix.startswith(col):
                        columns.append(col)
                        suffix = suffix[len(col) :].lstrip("_")
                        break
                else:
                    break
    by_column = {f.column: f.name for f in obj.fields} if obj else {}
    return [by_column.get(c, c) for c in columns if c != "account_id"]


@asynccontextmanager
async def translate_errors(obj: ObjectType | None = None) -> AsyncIterator[None]:
    """Turn driver errors raised inside the block into `AetherError`s."""
    try:
        yield
    except AetherError:
        raise
    except sa_exc.IntegrityError as exc:
        code = _code(exc)
        if code in _UNIQUE_CODES:
            fields = unique_fields(exc, obj)
            if fields == ["id"]:
                raise IdCollisionError() from exc
            raise ConflictError(
                "An object with the same " + (", ".join(fields) or "unique value") + " exists",
                errors=[{"path": f, "message": "already taken"} for f in fields],
            ) from exc
        if code in _FK_CODES:
            raise ConflictError("The change would break a reference between objects") from exc
        raise ValidationError.single("", "the values break a database constraint") from exc
    except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError) as exc:
        # Only "cannot answer now" and "schema behind the models" are 503s; anything else
        # is a bug: re-raised, logged with its traceback and answered with a bare 500.
        from engine.driver_errors import meaning
        from engine.errors import NOT_MIGRATED

        found = meaning(exc)
        if found == "not_migrated":
            logger.warning("database schema behind the models: run `aether migrate`")
            raise ServiceUnavailableError(NOT_MIGRATED) from exc
        if found == "unavailable":
            logger.warning("database unavailable: %s", type(exc).__name__)
            raise ServiceUnavailableError("The database is not answering; retry shortly") from exc
        raise


@asynccontextmanager
async def transaction(
    engine: AsyncEngine, obj: ObjectType | None = None
) -> AsyncIterator[AsyncConnection]:
    """One transaction for one request, with driver errors translated; the changes noted on
    it are published once it has committed (engine.realtime)."""
    async with translate_errors(obj), asyncio.timeout(deadline(engine)), engine.begin() as conn:
        yield conn
    await publish_noted(conn)


async def read(
    engine: AsyncEngine,
    work: Callable[[AsyncConnection], Awaitable[T]],
    obj: ObjectType | None = None,
) -> T:
    """Run `work` (statements that change nothing) on a connection of the autocommit engine.

    No transaction and no pre-ping: a connection the database dropped (a restart, an idle
    timeout) fails its first statement, and the read is retried once on a fresh one.
    """
    async with translate_errors(obj), asyncio.timeout(deadline(engine)):
        try:
            async with engine.connect() as conn:
                return await work(conn)
        except sa_exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            logger.info("database connection was dropped; retrying the read once")
        async with engine.connect() as conn:
            return await work(conn)


@asynccontextmanager
async def autocommit(
    engine: AsyncEngine, obj: ObjectType | None = None
) -> AsyncIterator[AsyncConnection]:
    """A connection whose statements each commit by themselves, driver errors translated.

    For writes that are one statement, or a few whose consistency the statements themselves
    guard (a version predicate, a foreign key), so no BEGIN/COMMIT round trips are needed.
    The changes noted on it are published when the work ends without an error.
    """
    async with translate_errors(obj), asyncio.timeout(deadline(engine)), engine.connect() as conn:
        yield conn
    await publish_noted(conn)


async def fetch_one(conn: AsyncConnection, stmt: sa.Select[Any]) -> Mapping[str, Any] | None:
    row: Mapping[str, Any] | None = (await conn.execute(stmt)).mappings().first()
    return row


async def fetch_all(conn: AsyncConnection, stmt: sa.Select[Any]) -> list[Mapping[str, Any]]:
    return list((await conn.execute(stmt)).mappings().all())
