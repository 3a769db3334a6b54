"""`translate_errors` on every backend: only "cannot answer now" and "schema behind the
models" become 503; a statement the driver refuses is a bug, re-raised for a bare 500."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.db import create_engine
from engine.errors import NOT_MIGRATED, ServiceUnavailableError
from engine.repository import translate_errors
from engine.settings import Settings


async def run(engine: AsyncEngine, statement: sa.Executable) -> None:
    async with translate_errors(), engine.connect() as conn:
        await conn.execute(statement)


async def test_missing_table_or_column_is_not_migrated(db_engine: AsyncEngine) -> None:
    for statement in ("SELECT * FROM no_such_table", "SELECT no_such_column FROM account"):
        with pytest.raises(ServiceUnavailableError) as exc:
            await run(db_engine, sa.text(statement))
        assert exc.value.detail == NOT_MIGRATED


async def test_refused_statements_are_not_503(db_engine: AsyncEngine, backend: str) -> None:
    """Syntax errors, too many bound values, LIKE patterns past SQLite's limit: bugs."""
    with pytest.raises(sa_exc.DBAPIError):
        await run(db_engine, sa.text("SELEC 1"))
    if backend == "postgresql":  # asyncpg binds at most 32,767 values per statement
        values = sa.select(sa.literal(1)).where(sa.literal(0).in_(list(range(40_000))))
        with pytest.raises(sa_exc.DBAPIError):
            await run(db_engine, values)
    if backend == "sqlite":
        like = sa.select(sa.literal("a").like(sa.literal("%a" * 30_000)))
        with pytest.raises(sa_exc.OperationalError):
            await run(db_engine, like)


async def test_unreachable_database_is_503(database_url: str, tmp_path: Path) -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        url = url.set(database=str(tmp_path / "no" / "such" / "dir" / "x.db"))
    else:
        url = url.set(host="127.0.0.1", port=1)
    engine = create_engine(Settings(database_url=url.render_as_string(hide_password=False)))
    try:
        with pytest.raises(ServiceUnavailableError) as exc:
            await run(engine, sa.text("SELECT 1"))
        assert exc.value.headers["Retry-After"]
    finally:
        await engine.dispose()
        await asyncio.sleep(0.1)  # aiosqlite's thread for the failed connection winds down
