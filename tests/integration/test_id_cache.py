"""Id resolution: downloads by a container's id learn its type once, then look in one table.

Runs on every backend with the in-process cache and with Redis. A stale or planted entry
costs a miss (a second statement), never another account's file or the wrong one; a delete
forgets the id in every worker (Redis pub/sub).
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import httpx
import pytest

from engine.app import create_app
from engine.cache import RedisCache
from engine.runtime import build_runtime
from tests.backends import drop_redis_namespace
from tests.integration.conftest import Api, make_settings, redis_for
from tests.integration.test_actions import account_pk_of, make_event, upload
from tests.statements import count_statements


@pytest.fixture(params=["memory", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def uploaded(api: Api, code: str = "IDS-1") -> tuple[dict[str, object], str, str]:
    event = await make_event(api, code=code)
    sent = await upload(api, str(event["id"]), [("file", ("a.txt", b"cached\n", "text/plain"))])
    assert sent.status_code == 201, sent.text
    body = sent.json()
    return event, body["files"][0]["id"], body["event_files"][0]["id"]


def unions(statements: list[str]) -> int:
    return sum("UNION ALL" in s.upper() for s in statements)


async def test_a_download_learns_the_type_of_the_id(api: Api) -> None:
    rt, key = api.runtime, api.a.headers("viewer")
    event, _file, link = await uploaded(api)
    await api.client.get("/v3/crud/schema", headers=key)  # the key is verified and cached
    before = rt.ids.counts()

    with count_statements(rt) as first:
        got = await api.client.get(f"/v3/action/download/{link}", headers=key)
    assert got.status_code == 200 and got.content == b"cached\n"
    with count_statements(rt) as second:
        again = await api.client.get(f"/v3/action/download/{link}", headers=key)
    assert again.status_code == 200 and again.content == b"cached\n"
    assert (len(first), unions(first)) == (1, 1)  # a miss: the three-way lookup
    assert (len(second), unions(second)) == (1, 0)  # a hit: the event_file table alone
    after = rt.ids.counts()
    assert after["misses"] == before["misses"] + 1
    assert after["hits"] == before["hits"] + 1

    # An event's id is learned by its first download too (a create does not fill the cache).
    for unions_expected in (1, 0):
        with count_statements(rt) as by_event:
            got = await api.client.get(f"/v3/action/download/{event['id']}", headers=key)
        assert got.status_code == 200 and got.content == b"cached\n"
        assert (len(by_event), unions(by_event)) == (1, unions_expected)
    ready = await api.client.get("/readyz")
    assert ready.json()["id_cache"]["hits"] == rt.ids.counts()["hits"]


async def test_a_wrong_entry_costs_a_miss_never_a_wrong_file(api: Api) -> None:
    rt = api.runtime
    a_pk = await account_pk_of(rt, api.a.account_id)
    b_pk = await account_pk_of(rt, api.b.account_id)
    _event_a, file_a, _ = await uploaded(api)
    other_event = await make_event(api, code="IDS-2")  # no file: a wrong target
    # Its download finds no file, but teaches what the id is.
    seen_event = f"/v3/action/download/{other_event['id']}"
    assert (await api.client.get(seen_event, headers=api.a.headers())).status_code == 404
    other_entry = await rt.ids.get(a_pk, str(other_event["id"]))
    assert other_entry is not None and other_entry.type == "event"

    # Account A's cache says A's file id is the empty event: the answer is still the file.
    await rt.ids.put(a_pk, file_a, other_entry)
    await api.client.get("/v3/crud/schema", headers=api.a.headers())  # the key is cached
    with count_statements(rt) as seen:
        got = await api.client.get(f"/v3/action/download/{file_a}", headers=api.a.headers())
    assert got.status_code == 200 and got.content == b"cached\n"
    assert len(seen) == 2 and rt.ids.counts()["stale"] >= 1
    relearned = await rt.ids.get(a_pk, file_a)
    assert relearned is not None and relearned.type == "file"

    # Account B's cache is told A's file id is A's own file, by its key: B still gets 404.
    planted = await rt.ids.get(a_pk, file_a)
    assert planted is not None
    await rt.ids.put(b_pk, file_a, planted)
    refused = await api.client.get(f"/v3/action/download/{file_a}", headers=api.b.headers())
    assert refused.status_code == 404
    assert await rt.ids.get(b_pk, file_a) is None  # the stale entry is gone


async def test_a_deleted_id_is_forgotten(api: Api) -> None:
    rt, key = api.runtime, api.a.headers()
    event, _file, _link = await uploaded(api)
    a_pk = await account_pk_of(rt, api.a.account_id)
    downloaded = await api.client.get(f"/v3/action/download/{event['id']}", headers=key)
    assert downloaded.status_code == 200
    assert await rt.ids.get(a_pk, str(event["id"])) is not None
    deleted = await api.client.delete(f"/v3/crud/event/{event['id']}", headers=key)
    assert deleted.status_code == 204, deleted.text
    assert await rt.ids.get(a_pk, str(event["id"])) is None
    assert (
        await api.client.get(f"/v3/action/download/{event['id']}", headers=key)
    ).status_code == 404


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("cache_backend", ["memory"])  # the workers make their own caches
@pytest.mark.parametrize("deployment", ["redis", "redis-cluster"])
async def test_a_delete_reaches_every_worker(
    api: Api, tmp_path: Path, deployment: str, request: pytest.FixtureRequest
) -> None:
    """Two workers on one Redis (a server, or a cluster): a delete on one clears the other's
    in-process entry."""
    url, cluster = await redis_for(request, deployment)
    namespace = f"aether-test:{secrets.token_hex(6)}:"
    settings = make_settings(
        api.runtime.settings.database_url, tmp_path, redis_url=url, redis_cluster=cluster
    )
    workers = [
        build_runtime(settings, cache=RedisCache(url, cluster=cluster, namespace=namespace))
        for _ in "12"
    ]
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, runtime=rt)),
            base_url="http://aether.test",
        )
        for rt in workers
    ]
    try:
        for rt in workers:
            await rt.ids.start()
        for rt in workers:
            await asyncio.wait_for(rt.ids.listening.wait(), 10)
        key = api.a.headers()
        made = await clients[0].post(
            "/v3/crud/event",
            json={"name": "Shared", "starts_at": "2027-03-14T09:00:00Z", "code": "IDS-W"},
            headers=key,
        )
        assert made.status_code == 201, made.text
        event = made.json()["id"]
        seen = await clients[0].get(f"/v3/action/download/{event}", headers=key)
        assert seen.status_code == 404  # no file, but the first worker learned what the id is
        a_pk = await account_pk_of(workers[0], api.a.account_id)
        # The second worker learns it from the shared cache, then keeps it in process.
        learned = await workers[1].ids.get(a_pk, event)
        assert learned is not None and learned.type == "event"
        assert workers[1].ids._local(a_pk, event) is not None
        deleted = await clients[0].delete(f"/v3/crud/event/{event}", headers=key)
        assert deleted.status_code == 204, deleted.text
        for _ in range(100):
            if workers[1].ids._local(a_pk, event) is None:
                break
            await asyncio.sleep(0.05)
        assert workers[1].ids._local(a_pk, event) is None
        assert await workers[1].ids.get(a_pk, event) is None
    finally:
        for client in clients:
            await client.aclose()
        for rt in workers:
            await rt.close()
        await drop_redis_namespace(url, namespace, cluster=cluster)
