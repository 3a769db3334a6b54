"""Fixtures shared by every test layer: backends, databases with the schema, settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.db import create_engine
from engine.settings import Settings
from tests.backends import BACKENDS, check_redis, fresh_database, redis_url, unavailable
from tests.redis_servers import RedisDeployment, missing_binaries, start_cluster, start_sentinel
from tests.s3_server import S3Server, moto_missing, start_s3


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


def _private_redis(kind: str, factory: object, tmp: Path) -> Iterator[RedisDeployment]:
    missing = missing_binaries()
    if missing:
        unavailable(f"a private Redis {kind}", FileNotFoundError(", ".join(missing)))
    try:
        deployment = factory(tmp)  # type: ignore[operator]
    except Exception as exc:
        pytest.fail(f"could not start the private Redis {kind}: {exc}", pytrace=False)
    try:
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisDeployment]:
    """A three-master Redis Cluster on free loopback ports, for this test process."""
    yield from _private_redis("cluster", start_cluster, tmp_path_factory.mktemp("redis-cluster"))


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisDeployment]:
    """A private master and a sentinel watching it, for this test process."""
    yield from _private_redis("sentinel", start_sentinel, tmp_path_factory.mktemp("redis-sent"))


REDIS_KINDS = ("standalone", "cluster", "sentinel")


@pytest.fixture(params=REDIS_KINDS)
async def redis_target(request: pytest.FixtureRequest) -> RedisDeployment:
    """Runs a test on the machine's Redis, a private Cluster and a private Sentinel."""
    if request.param == "standalone":
        url = redis_url()
        try:
            await check_redis(url)
        except Exception as exc:
            unavailable("redis", exc)
        return RedisDeployment("standalone", url)
    found = request.getfixturevalue(f"redis_{request.param}")
    assert isinstance(found, RedisDeployment)
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A private S3-compatible server (moto) on a free loopback port, for this process."""
    if moto_missing():
        unavailable("an S3 server (moto[server])", ModuleNotFoundError("moto"))
    try:
        server = start_s3(tmp_path_factory.mktemp("s3"))
    except Exception as exc:
        pytest.fail(f"could not start moto_server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
