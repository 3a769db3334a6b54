"""The real databases and Redis the integration and end-to-end tests run against.

SQLite always runs. MariaDB, PostgreSQL and Redis run when they answer on their default
local ports (or at `AE_TEST_DATABASE_URLS` / `AE_TEST_REDIS_URL`); with
`AE_TEST_REQUIRE_SERVICES=1` a missing one fails the run instead of skipping.

Each test run makes its own database per server (`aether_t_<random>`) and drops it after.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

DEFAULT_SERVER_URLS = {
    "mariadb": "mysql+asyncmy://root@127.0.0.1:3306/test",
    "postgresql": "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
}
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
BACKENDS = ("sqlite", "mariadb", "postgresql")


def require_services() -> bool:
    return os.environ.get("AE_TEST_REQUIRE_SERVICES", "").strip().lower() in ("1", "true", "yes")


def server_urls() -> dict[str, str]:
    """Server URLs by backend, from `AE_TEST_DATABASE_URLS` (comma-separated) or defaults."""
    urls = dict(DEFAULT_SERVER_URLS)
    for raw in os.environ.get("AE_TEST_DATABASE_URLS", "").split(","):
        raw = raw.strip()
        if not raw:
            continue
        backend = make_url(raw).get_backend_name()
        urls["mariadb" if backend in ("mysql", "mariadb") else backend] = raw
    return urls


def redis_url() -> str:
    return os.environ.get("AE_TEST_REDIS_URL", DEFAULT_REDIS_URL)


def unavailable(what: str, exc: BaseException) -> None:
    """Skip (or fail, when services are required) because `what` does not answer."""
    message = f"{what} is not reachable: {type(exc).__name__}: {exc}"
    if require_services():
        pytest.fail(message + " (AE_TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


@asynccontextmanager
async def fresh_database(backend: str, tmp_dir: Path) -> AsyncIterator[str]:
    """Create an empty database on `backend`, yield its URL, drop it afterwards."""
    name = f"aether_t_{secrets.token_hex(6)}"
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_dir / (name + '.db')}"
        return
    server = make_url(server_urls()[backend])
    admin = create_async_engine(
        server, isolation_level="AUTOCOMMIT", connect_args=_connect_args(backend)
    )
    try:
        async with admin.connect() as conn:
            if backend == "mariadb":
                await conn.execute(
                    sa.text(
                        f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                    )
                )
            else:
                await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        await admin.dispose()
        unavailable(backend, exc)
        raise
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            async with admin.connect() as conn:
                if backend == "mariadb":
                    await conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
                else:
                    await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await admin.dispose()


def _connect_args(backend: str) -> dict[str, object]:
    return {"connect_timeout": 5} if backend == "mariadb" else {"timeout": 5}


async def check_redis(url: str, *, cluster: bool = False) -> None:
    from engine.redis_client import connect_url

    client = connect_url(url, cluster=cluster, socket_connect_timeout=2, socket_timeout=2)
    try:
        await asyncio.wait_for(client.ping(), 3)
    finally:
        await client.aclose()


async def drop_redis_namespace(url: str, namespace: str, *, cluster: bool = False) -> None:
    """Delete every key under `namespace` (a test's own prefix) from the Redis at `url`
    (every node of a cluster; one key per command, as keys of a cluster span slots)."""
    from engine.redis_client import connect_url

    client = connect_url(url, cluster=cluster)
    try:
        keys = [key async for key in client.scan_iter(match=namespace + "*")]
        for key in keys:
            await client.delete(key)
    finally:
        await client.aclose()
