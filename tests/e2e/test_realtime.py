"""The change feed across two real server processes sharing Redis (SPEC 6.5).

A WebSocket subscriber on server B sees what is written through server A: filtered, in
order, exactly once; a reconnect with `since` replays what it missed; a resume point the
stream no longer covers answers `resync-required`; another account sees nothing. SSE carries
the same change objects with `id:` lines and resumes from `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets

from tests.e2e.conftest import ServerProcess, aether_env, sqlite_url, wait_healthy

pytestmark = pytest.mark.e2e

EVENT = {"starts_at": "2026-06-01T09:00:00Z"}


def ws_url(server: ServerProcess) -> str:
    return f"ws://127.0.0.1:{server.port}/v3/realtime"


@pytest.fixture
def two_servers(tmp_path: Path, redis_test_url: str) -> Iterator[tuple[Any, ...]]:
    slug_a, slug_b = f"rt-{secrets.token_hex(4)}", f"rt-{secrets.token_hex(4)}"
    with aether_env(
        sqlite_url(tmp_path), tmp_path / "work", AE_REDIS_URL=redis_test_url
    ) as env:  # fmt: skip
        one, two = env.launch(), env.launch()
        env.cli("migrate")
        a = {**env.create_account(slug_a), "slug": slug_a}
        b = {**env.create_account(slug_b), "slug": slug_b}
        for server in (one, two):
            assert wait_healthy(server), server.describe()
        try:
            yield env, one, two, a, b
        finally:
            client = redis.Redis.from_url(redis_test_url)
            for account in (a, b):
                client.delete(f"ae:{{acct:{account['account_id']}}}:feed")
            client.close()


def post(server: ServerProcess, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with server.client() as c:
        r = c.post(path, json=body, headers={"X-API-Key": key})
    assert r.status_code == 201, r.text
    return dict(r.json())


def patch(server: ServerProcess, key: str, path: str, body: dict[str, Any]) -> None:
    with server.client() as c:
        r = c.patch(path, json=body, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text


def delete(server: ServerProcess, key: str, path: str) -> None:
    with server.client() as c:
        r = c.delete(path, headers={"X-API-Key": key})
    assert r.status_code == 204, r.text


async def recv(ws: Any, wait: float = 10.0) -> dict[str, Any]:
    """The next message that is not a ping."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), wait))
        if message["type"] != "ping":
            return dict(message)


async def nothing_more(ws: Any, wait: float = 1.0) -> None:
    with pytest.raises(TimeoutError):
        await recv(ws, wait)


async def subscribe(ws: Any, sid: str, obj: str, **extra: Any) -> None:
    await ws.send(json.dumps({"type": "subscribe", "id": sid, "object": obj, **extra}))
    assert await recv(ws) == {"type": "subscribed", "id": sid}


def changes(messages: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(m["op"], m["id"], m["version"]) for m in messages]


async def test_a_subscriber_on_one_server_sees_writes_made_through_the_other(two_servers):
    env, one, two, a, b = two_servers
    key_a, key_b = a["api_key"], b["api_key"]
    headers_a = {"X-API-Key": key_a}
    async with (
        websockets.connect(ws_url(two), additional_headers=headers_a) as ws,
        websockets.connect(ws_url(two)) as other,
    ):
        await other.send(json.dumps({"type": "auth", "token": key_b}))
        await subscribe(other, "all", "event")
        await subscribe(ws, "gala", "event", filter={"name": {"_icontains": "gala"}})
        await subscribe(ws, "sessions", "event_session")

        gala = post(one, key_a, "/v3/crud/event", {**EVENT, "name": "Summer Gala"})
        post(one, key_a, "/v3/crud/event", {**EVENT, "name": "Board meeting"})  # filtered out
        session = post(
            one, key_a, f"/v3/crud/event/{gala['id']}/event_session",
            {"title": "Keynote", "starts_at": "2026-06-01T10:00:00Z"},
        )  # fmt: skip
        patch(one, key_a, f"/v3/crud/event/{gala['id']}", {"venue": "Hall 1"})
        with one.client() as c:
            read = c.get(f"/v3/crud/event/{gala['id']}", headers=headers_a).json()
        delete(one, key_a, f"/v3/crud/event/{gala['id']}")  # cascades to the session

        got = [await recv(ws) for _ in range(5)]
        await nothing_more(ws)
        by_sub: dict[str, list[dict[str, Any]]] = {}
        for m in got:
            assert m["type"] == "change", m
            by_sub.setdefault(m["subscription"], []).append(m)
        assert changes(by_sub["gala"]) == [
            ("create", gala["id"], 1),
            ("update", gala["id"], 2),
            ("delete", gala["id"], 2),
        ]
        assert changes(by_sub["sessions"]) == [
            ("create", session["id"], 1),
            ("delete", session["id"], 1),
        ]
        created, updated, deleted = by_sub["gala"]
        assert created["data"] == gala
        assert updated["data"] == read and read["venue"] == "Hall 1"
        assert deleted["data"] is None
        seqs = [m["seq"] for m in got]
        assert len(set(seqs)) == len(seqs)
        # Another account's subscriber received nothing at all.
        await nothing_more(other, 0.5)

    # A reconnect with `since` replays what came after it, and only that.
    async with websockets.connect(ws_url(two), additional_headers=headers_a) as ws:
        await subscribe(ws, "again", "event", since=created["seq"])
        replayed = [await recv(ws) for _ in range(3)]
        await nothing_more(ws, 0.5)
        assert changes(replayed) == [
            ("create", replayed[0]["id"], 1),  # the board meeting
            ("update", gala["id"], 2),
            ("delete", gala["id"], 2),
        ]
        assert replayed[0]["data"]["name"] == "Board meeting"

        # A resume point the stream no longer covers (trimmed past it) is refused.
        client = redis.Redis.from_url(env.env["AE_REDIS_URL"])
        client.xtrim(f"ae:{{acct:{a['account_id']}}}:feed", maxlen=0)
        client.close()
        await ws.send(json.dumps(
            {"type": "subscribe", "id": "old", "object": "event", "since": created["seq"]}
        ))  # fmt: skip
        error = await recv(ws)
        assert error["type"] == "error" and error["subscription"] == "old"
        assert error["problem"]["status"] == 410
        assert error["problem"]["type"].endswith("resync-required")


async def test_refusals_over_websocket(two_servers):
    _env, one, _two, a, _b = two_servers
    async with websockets.connect(ws_url(one)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "ae_nope_nope"}))
        error = await recv(ws)
        assert error["type"] == "error" and error["problem"]["status"] == 401
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    headers = {"X-API-Key": a["api_key"]}
    async with websockets.connect(ws_url(one), additional_headers=headers) as ws:
        bad = [
            ({"type": "subscribe", "id": "r", "object": "event", "filter": {"account": {}}}, 422),
            ({"type": "subscribe", "id": "u", "object": "nope"}, 422),
            ({"type": "subscribe", "id": "f", "object": "event", "filter": {"nam": 1}}, 422),
            ({"type": "subscribe", "id": "s", "object": "event", "since": "x"}, 422),
            ({"type": "hello"}, 422),
        ]
        for message, status in bad:
            await ws.send(json.dumps(message))
            error = await recv(ws)
            assert error["type"] == "error", message
            assert error["problem"]["status"] == status, error
        await ws.send("not json")
        assert (await recv(ws))["problem"]["status"] == 422


async def test_an_expired_token_closes_the_connection(two_servers):
    env, one, _two, a, _b = two_servers
    # Long enough to connect on a loaded machine (the CLI alone takes seconds to start).
    token = env.cli("token", "--account", a["slug"], "--role", "viewer", "--ttl", "12").stdout
    headers = {"Authorization": f"Bearer {token.strip()}"}
    async with websockets.connect(ws_url(one), additional_headers=headers) as ws:
        await subscribe(ws, "s", "event")
        error = await recv(ws, 30.0)
        assert error["type"] == "error" and error["problem"]["status"] == 401
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_sse_carries_the_same_changes_and_resumes(two_servers):
    _env, one, two, a, b = two_servers
    key = a["api_key"]
    url = f"{two.base_url}/v3/realtime/sse"
    params = {"object": "event", "filter": json.dumps({"status": "open"})}
    with httpx.Client(timeout=15.0) as c:
        assert c.get(url, params=params).status_code == 401
        r = c.get(url, params={"object": "event", "filter": '{"account": {}}'},
                  headers={"X-API-Key": key})  # fmt: skip
        assert r.status_code == 422
        r = c.get(url, params={**params, "since": "99999999999999-0"}, headers={"X-API-Key": key})
        assert r.status_code == 410 and r.json()["type"].endswith("resync-required")
        with c.stream("GET", url, params={**params, "access_token": key}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            assert next(lines) == ": connected"
            post(one, key, "/v3/crud/event", {**EVENT, "name": "draft"})
            first = post(one, key, "/v3/crud/event", {**EVENT, "name": "x", "status": "open"})
            post(one, b["api_key"], "/v3/crud/event", {**EVENT, "name": "y", "status": "open"})
            second = post(one, key, "/v3/crud/event", {**EVENT, "name": "z", "status": "open"})
            events = _sse_events(lines, 2)
        assert [e["data"]["id"] for e in events] == [first["id"], second["id"]]
        assert all(e["data"]["type"] == "change" and e["id"] == e["data"]["seq"] for e in events)
        headers = {"X-API-Key": key, "Last-Event-ID": events[0]["id"]}
        with c.stream("GET", url, params=params, headers=headers) as stream:
            replayed = _sse_events(stream.iter_lines(), 1)
        assert replayed[0]["data"]["id"] == second["id"]


def _sse_events(lines: Iterator[str], count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if line.startswith("id: "):
            current["id"] = line[4:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            found.append(current)
            current = {}
            if len(found) == count:
                return found
    raise AssertionError(f"the stream ended after {found}")
