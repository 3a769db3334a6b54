"""Under load a worker sheds, it never hangs: a drained pool answers 503 with `Retry-After`
within `AE_DB_POOL_TIMEOUT`, and a worker shutting down says so on `/readyz`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.integration.conftest import Api, make_api, make_settings

POOL_TIMEOUT = 0.5
HANG_GUARD = POOL_TIMEOUT + 10  # fails the test instead of hanging it; not a speed bound


@pytest.fixture
async def small_pool_api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = make_settings(database_url, tmp_path, db_pool_size=1, db_pool_timeout=POOL_TIMEOUT)
    made = await make_api(settings, None)
    async with made.client:
        yield made
    await made.runtime.close()


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])  # SQLite has no pool to drain
async def test_an_exhausted_pool_answers_503_with_retry_after(small_pool_api: Api) -> None:
    api = small_pool_api
    key = api.a.headers("viewer")
    made = await api.client.post(
        "/v3/crud/event",
        json={"name": "Busy", "starts_at": "2027-03-14T09:00:00Z"},
        headers=api.a.headers("editor"),
    )
    event = made.json()["id"]
    reader = api.runtime.reader
    async with AsyncExitStack() as held:
        for _ in range(reader.sync_engine.pool.size()):  # no overflow: every one taken
            await held.enter_async_context(reader.connect())
        for url in (
            f"/v3/crud/event/{event}",
            "/v3/crud/event",
            f"/v3/crud/event/{event}/event_session",
        ):
            async with asyncio.timeout(HANG_GUARD):
                answer = await api.client.get(url, headers=key)
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert int(answer.headers["retry-after"]) >= 1
    assert (await api.client.get(f"/v3/crud/event/{event}", headers=key)).status_code == 200


async def test_readyz_answers_503_once_shutdown_begins(api: Api) -> None:
    # (The suite's databases are made without Alembic, so /readyz says "not migrated".)
    assert (await api.client.get("/readyz")).json()["status"] == "not ready"
    api.runtime.shutdown.begin("test")
    answer = await api.client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["status"] == "shutting down"
    assert answer.headers["retry-after"]
    # Requests in flight, and those already on an open connection, are still served.
    assert (await api.client.get("/v3/crud/event", headers=api.a.headers())).status_code == 200
