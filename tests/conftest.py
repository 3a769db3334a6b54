"""Fixtures shared by every test layer: backends, databases with the schema, settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.db import create_engine
from engine.settings import Settings
from tests.backends import BACKENDS, check_redis, fresh_database, redis_url, unavailable


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over SQLite, MariaDB and PostgreSQL."""
    return str(request.param)


@pytest.fixture
async def empty_database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A new, empty database on `backend` for this test alone."""
    async with fresh_database(backend, tmp_path) as url:
        yield url


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A new database on `backend` with every model's table, for this test alone."""
    from models.base import Base

    async with fresh_database(backend, tmp_path) as url:
        engine = create_engine(Settings(database_url=url))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
        finally:
            await engine.dispose()
        yield url


@pytest.fixture
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=database_url))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def redis_test_url() -> str:
    """The test Redis URL; skips (or fails under AE_TEST_REQUIRE_SERVICES) when down."""
    url = redis_url()
    try:
        await check_redis(url)
    except Exception as exc:
        unavailable("redis", exc)
    return url
