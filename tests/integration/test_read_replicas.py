"""`AE_DATABASE_READ_URL`: reads on the replica, writes on the primary, read-your-writes.

Two private MariaDB servers in replication, started here (tests/private_mariadb.py). The
replica is made to lag on purpose (`STOP SLAVE SQL_THREAD`), so what a read returns says
which server answered it; then it is stopped, and reads fall back to the primary.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from engine.app import create_app
from engine.cache import RedisCache
from engine.migrate import upgrade
from engine.runtime import build_runtime
from engine.settings import Settings
from tests.backends import check_redis, drop_redis_namespace, redis_url, unavailable
from tests.integration.conftest import Api, make_api, make_settings
from tests.private_mariadb import PrivateMariaDB, replicated_pair, wait_replicated

EVENT = {"name": "Before", "starts_at": "2027-03-14T09:00:00Z"}
DATABASE = "aether_replica"


@dataclass
class Site:
    api: Api
    primary: PrivateMariaDB
    replica: PrivateMariaDB


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[PrivateMariaDB, PrivateMariaDB]]:
    with replicated_pair(tmp_path / "mariadb") as servers:
        yield servers


async def make_schema(primary: PrivateMariaDB) -> None:
    admin = create_async_engine(primary.url(), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(
                sa.text(
                    f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
            )
    finally:
        await admin.dispose()
    await upgrade(Settings(env="test", database_url=primary.url(DATABASE)))


@pytest.fixture
async def site(pair: tuple[PrivateMariaDB, PrivateMariaDB], tmp_path: Path) -> AsyncIterator[Site]:
    primary, replica = pair
    await make_schema(primary)
    settings = make_settings(
        primary.url(DATABASE), tmp_path, database_read_url=replica.url(DATABASE)
    )
    api = await make_api(settings, None)
    assert api.runtime.reads is not None
    api.runtime.reads.sticky_seconds = 1.0
    api.runtime.reads.retry_seconds = 0.5
    wait_replicated(primary, replica)
    async with api.client:
        yield Site(api, primary, replica)
    await api.runtime.close()


async def test_reads_use_the_replica_and_a_writer_reads_its_own_writes(site: Site) -> None:
    api, client = site.api, site.api.client
    writer, other = api.a.headers("editor"), api.a.headers("viewer")
    made = await client.post("/v3/crud/event", json={**EVENT, "code": "R1"}, headers=writer)
    assert made.status_code == 201, made.text
    event = made.json()["id"]
    wait_replicated(site.primary, site.replica)

    site.replica.sql("STOP SLAVE SQL_THREAD")  # the replica now lags the primary
    changed = await client.patch(f"/v3/crud/event/{event}", json={"name": "After"}, headers=writer)
    assert changed.status_code == 200, changed.text
    second = await client.post("/v3/crud/event", json={**EVENT, "code": "R2"}, headers=writer)
    assert second.status_code == 201, second.text
    new_id = second.json()["id"]

    # The writer reads the primary: its own writes, item and list alike.
    mine = await client.get(f"/v3/crud/event/{event}", headers=writer)
    assert mine.json()["name"] == "After"
    assert (await client.get(f"/v3/crud/event/{new_id}", headers=writer)).status_code == 200
    listed = await client.get("/v3/crud/event", params={"fields": "id"}, headers=writer)
    assert {e["id"] for e in listed.json()["data"]} == {event, new_id}

    # Another principal reads the replica, which has not applied them yet.
    theirs = await client.get(f"/v3/crud/event/{event}", headers=other)
    assert theirs.status_code == 200 and theirs.json()["name"] == "Before"
    assert (await client.get(f"/v3/crud/event/{new_id}", headers=other)).status_code == 404
    listed = await client.get("/v3/crud/event", params={"fields": "id"}, headers=other)
    assert [e["id"] for e in listed.json()["data"]] == [event]
    found = await client.post(
        "/v3/crud/event/search", json={"filter": {"name": {"_eq": "After"}}}, headers=other
    )
    assert found.status_code == 200 and found.json()["data"] == []
    # A search writes nothing, so it does not make its caller read the primary.
    again = await client.get(f"/v3/crud/event/{event}", headers=other)
    assert again.json()["name"] == "Before"

    # Past the sticky window the writer reads the (lagging) replica again, as documented.
    await asyncio.sleep(api.runtime.reads.sticky_seconds + 0.2)  # type: ignore[union-attr]
    stale = await client.get(f"/v3/crud/event/{event}", headers=writer)
    assert stale.json()["name"] == "Before"

    site.replica.sql("START SLAVE SQL_THREAD")
    wait_replicated(site.primary, site.replica)
    caught_up = await client.get(f"/v3/crud/event/{event}", headers=other)
    assert caught_up.json()["name"] == "After"
    assert (await client.get(f"/v3/crud/event/{new_id}", headers=other)).status_code == 200


async def test_writes_and_their_checks_go_to_the_primary(site: Site) -> None:
    """A nested create finds its parent on the primary, however far the replica lags."""
    api, client = site.api, site.api.client
    writer = api.a.headers("editor")
    site.replica.sql("STOP SLAVE SQL_THREAD")
    made = await client.post("/v3/crud/event", json={**EVENT, "code": "P1"}, headers=writer)
    event = made.json()["id"]
    child = await client.post(
        f"/v3/crud/event/{event}/event_session",
        json={"title": "Keynote", "starts_at": "2027-03-14T10:00:00Z"},
        headers=writer,
    )
    assert child.status_code == 201, child.text
    deleted = await client.delete(f"/v3/crud/event/{event}", headers=writer)
    assert deleted.status_code == 204, deleted.text
    site.replica.sql("START SLAVE SQL_THREAD")
    wait_replicated(site.primary, site.replica)
    gone = await client.get(f"/v3/crud/event/{event}", headers=api.a.headers("viewer"))
    assert gone.status_code == 404


async def test_downloads_read_the_replica(site: Site) -> None:
    api, client = site.api, site.api.client
    writer, other = api.a.headers("editor"), api.a.headers("viewer")
    made = await client.post("/v3/crud/event", json={**EVENT, "code": "D1"}, headers=writer)
    event = made.json()["id"]
    wait_replicated(site.primary, site.replica)
    site.replica.sql("STOP SLAVE SQL_THREAD")
    sent = await client.post(
        f"/v3/action/event/{event}/upload",
        files=[("file", ("notes.txt", b"replicated bytes\n", "text/plain"))],
        headers=writer,
    )
    assert sent.status_code == 201, sent.text
    assert (await client.get(f"/v3/action/download/{event}", headers=writer)).status_code == 200
    assert (await client.get(f"/v3/action/download/{event}", headers=other)).status_code == 404
    site.replica.sql("START SLAVE SQL_THREAD")
    wait_replicated(site.primary, site.replica)
    got = await client.get(f"/v3/action/download/{event}", headers=other)
    assert got.status_code == 200 and got.content == b"replicated bytes\n"


async def test_reads_fall_back_to_the_primary_while_the_replica_is_down(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    api, client = site.api, site.api.client
    router = api.runtime.reads
    assert router is not None
    reader = api.a.headers("viewer")
    made = await client.post(
        "/v3/crud/event", json={**EVENT, "code": "F1"}, headers=api.a.headers("editor")
    )
    event = made.json()["id"]
    wait_replicated(site.primary, site.replica)
    assert (await client.get(f"/v3/crud/event/{event}", headers=reader)).status_code == 200
    before = router.replica_reads

    site.replica.stop()
    for _ in range(3):  # the first meets the dead replica and is run again on the primary
        answer = await client.get(f"/v3/crud/event/{event}", headers=reader)
        assert answer.status_code == 200, answer.text
        listed = await client.get("/v3/crud/event", headers=reader)
        assert listed.status_code == 200, listed.text
    assert not router.replica_up
    assert "read replica unavailable" in caplog.text
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["replica"].startswith("degraded")

    site.replica.start()  # same port and data: replication resumes by itself
    wait_replicated(site.primary, site.replica)
    await asyncio.sleep(router.retry_seconds + 0.1)
    back = router.replica_reads
    assert (await client.get(f"/v3/crud/event/{event}", headers=reader)).status_code == 200
    assert router.replica_reads == back + 1 > before
    assert (await client.get("/readyz")).json()["checks"]["replica"] == "ok"


async def test_stickiness_reaches_every_worker_through_redis(site: Site, tmp_path: Path) -> None:
    """A write on one worker sends the writer's reads on another worker to the primary."""
    url = redis_url()
    try:
        await check_redis(url)
    except Exception as exc:
        unavailable("redis", exc)
    namespace = f"aether-test:{secrets.token_hex(6)}:"
    settings = make_settings(
        site.primary.url(DATABASE),
        tmp_path,
        database_read_url=site.replica.url(DATABASE),
        redis_url=url,
    )
    workers = [build_runtime(settings, cache=RedisCache(url, namespace=namespace)) for _ in "12"]
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, runtime=rt)),
            base_url="http://aether.test",
        )
        for rt in workers
    ]
    writer, other = site.api.a.headers("editor"), site.api.a.headers("viewer")
    try:
        site.replica.sql("STOP SLAVE SQL_THREAD")
        made = await clients[0].post("/v3/crud/event", json={**EVENT, "code": "W1"}, headers=writer)
        assert made.status_code == 201, made.text
        event = made.json()["id"]
        assert (await clients[1].get(f"/v3/crud/event/{event}", headers=writer)).status_code == 200
        assert (await clients[1].get(f"/v3/crud/event/{event}", headers=other)).status_code == 404
    finally:
        site.replica.sql("START SLAVE SQL_THREAD")
        for client in clients:
            await client.aclose()
        for rt in workers:
            await rt.close()
        await drop_redis_namespace(url, namespace)
