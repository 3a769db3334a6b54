"""Legacy routes on every backend: the same stored results as V3, the deprecation headers on
every answer, the usage counts (memory and Redis), and nothing at all while switched off."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis
from openapi_spec_validator import validate

from engine.cache import CacheBackend
from engine.legacy.usage import RedisUsageStore
from engine.settings import DEFAULT_LEGACY_SUNSET
from tests.backends import drop_redis_namespace
from tests.integration.conftest import Api, make_api, make_settings

EVENT = {"name": "Spring Gala", "starts_at": "2027-03-14T09:00:00+01:00", "venue": "Hall"}
SUNSET = "Fri, 31 Dec 2027 12:00:00 GMT"
PREFIXES = ("/v3/crud", "/v2/crud", "/crud")


@pytest.fixture
async def api(
    database_url: str, tmp_path: Path, app_cache: CacheBackend | None
) -> AsyncIterator[Api]:
    settings = make_settings(database_url, tmp_path, legacy_routes=True, legacy_sunset=SUNSET)
    made = await make_api(settings, app_cache)
    async with made.client:
        yield made
    await made.runtime.close()


def legacy_headers(r: httpx.Response, successor: str) -> None:
    assert r.headers["deprecation"] == "@1767225600", r.headers
    assert r.headers["sunset"] == SUNSET
    assert r.headers["link"] == f'<{successor}>; rel="successor-version"'


def unwrap(prefix: str, r: httpx.Response) -> dict:
    body = r.json()
    return body if prefix == "/v3/crud" else body["data"]


async def test_each_prefix_stores_what_v3_stores(api: Api) -> None:
    h = api.a.headers("editor")
    created: dict[str, dict] = {}
    for prefix in PREFIXES:
        r = await api.client.post(f"{prefix}/event", json=EVENT, headers=h)
        assert r.status_code == 201, r.text
        obj = unwrap(prefix, r)
        assert r.headers["location"] == f"{prefix}/event/{obj['id']}"
        assert r.headers["etag"] == '"1"'
        v3 = await api.client.get(f"/v3/crud/event/{obj['id']}", headers=h)
        assert v3.json() == obj  # the answer is what is stored
        created[prefix] = obj
    strip = ("id", "created_at", "updated_at")
    views = [{k: v for k, v in o.items() if k not in strip} for o in created.values()]
    assert views[0] == views[1] == views[2]

    for prefix, obj in created.items():
        url = f"{prefix}/event/{obj['id']}"
        got = await api.client.get(url, headers=h)
        assert got.status_code == 200 and unwrap(prefix, got) == obj
        for method in ("PATCH", "PUT") if prefix != "/v3/crud" else ("PATCH",):
            before = (await api.client.get(f"/v3/crud/event/{obj['id']}", headers=h)).json()
            r = await api.client.request(method, url, json={"venue": method}, headers=h)
            assert r.status_code == 200, r.text
            after = (await api.client.get(f"/v3/crud/event/{obj['id']}", headers=h)).json()
            assert unwrap(prefix, r) == after  # partial: only venue and the bookkeeping moved
            assert after["venue"] == method and after["version"] == before["version"] + 1
            assert after["name"] == before["name"] and after["starts_at"] == before["starts_at"]
            assert r.headers["etag"] == f'"{after["version"]}"'

    found = {}
    for prefix in ("/v3/crud", "/v2/crud"):
        body = {"filter": {"venue": "PUT"}, "sort": ["name"], "count": True}
        r = await api.client.post(f"{prefix}/event/search", json=body, headers=h)
        assert r.status_code == 200, r.text
        found[prefix] = r.json()
    assert found["/v2/crud"] == {
        "data": found["/v3/crud"]["data"],
        "has_more": False,
        "total": 2,
    }

    pages = []
    for offset in range(3):
        r = await api.client.get(f"/crud/event?limit=1&offset={offset}", headers=h)
        assert r.status_code == 200, r.text
        pages.append(r.json())
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert "next" not in pages[0] and "total" not in pages[0]
    listed = await api.client.get("/v3/crud/event", headers=h)
    assert [p["data"][0] for p in pages] == listed.json()["data"]

    for prefix, obj in created.items():
        r = await api.client.delete(f"{prefix}/event/{obj['id']}", headers=h)
        assert r.status_code == 204 and not r.content
        gone = await api.client.get(f"/v3/crud/event/{obj['id']}", headers=h)
        assert gone.status_code == 404


async def test_headers_on_every_answer_errors_included(api: Api) -> None:
    h = api.a.headers("editor")
    r = await api.client.post("/v2/crud/event", json=EVENT, headers=h)
    event = r.json()["data"]
    item = f"/crud/event/{event['id']}"
    successor = f"/v3/crud/event/{event['id']}"
    cases = [
        ("GET", item, {}, None, 401, successor),
        ("GET", item, {**h, "If-None-Match": '"1"'}, None, 304, successor),
        ("PUT", item, {**h, "If-Match": '"9"'}, {"venue": "x"}, 412, successor),
        ("PUT", item, {**h, "If-Match": "9"}, {"venue": "x"}, 400, successor),
        ("PATCH", item, h, {"nope": 1}, 422, successor),
        ("POST", item, h, {}, 405, successor),
        ("PUT", "/v2/crud/account/" + api.a.account_id, h, {"name": "x"}, 403, None),
        ("GET", "/v2/crud/nothing", h, None, 404, "/v3/crud/nothing"),
        ("GET", "/crud/event/1", h, None, 404, "/v3/crud/event/1"),  # integer ids name nothing
        ("GET", "/v2/crud/event/x/y", h, None, 404, "/v3/crud/event/x/y"),
        ("POST", "/crud/event/search", h, {}, 404, "/v3/crud/event/search"),
        ("GET", "/crud/schema", h, None, 404, "/v3/crud/schema"),
        ("GET", "/crud/event/schema", h, None, 404, "/v3/crud/event/schema"),
        ("POST", "/v2/crud/event/search", h, {"filter": {"x": 1}}, 422, "/v3/crud/event/search"),
        ("GET", "/v2/crud/event?limit=abc", h, None, 422, "/v3/crud/event"),
    ]
    for method, url, headers, body, status, link in cases:
        r = await api.client.request(method, url, headers=headers, json=body)
        assert r.status_code == status, (method, url, r.status_code, r.text)
        legacy_headers(r, link or f"/v3/crud/account/{api.a.account_id}")
        if status >= 400:
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["instance"] == url.split("?")[0]
        if status == 405:
            assert r.headers["allow"] == "GET, HEAD, PATCH, DELETE, PUT"
    unchanged = await api.client.get(f"/v3/crud/event/{event['id']}", headers=h)
    assert unchanged.json() == event  # no refused call changed anything


async def test_usage_counts_per_principal_for_admins_of_the_account(api: Api) -> None:
    editor, viewer = api.a.headers("editor"), api.a.headers("viewer")
    event = (await api.client.post("/crud/event", json=EVENT, headers=editor)).json()["data"]
    for _ in range(3):
        await api.client.get(f"/v2/crud/event/{event['id']}", headers=viewer)
    await api.client.get(f"/v2/crud/event/{secrets.token_urlsafe(16)[:22]}", headers=viewer)
    await api.client.put(f"/crud/event/{event['id']}", json={"venue": "x"}, headers=editor)
    await api.client.get("/crud/event", headers={})  # no principal: logged, not counted
    await api.client.get("/v2/crud/event", headers=api.b.headers("viewer"))

    r = await api.client.get("/v3/action/legacy-usage", headers=api.a.headers("admin"))
    assert r.status_code == 200, r.text
    assert "deprecation" not in r.headers
    rows = [{k: v for k, v in u.items() if k != "last_called_at"} for u in r.json()["data"]]
    viewer_key = await key_id(api, "viewer")
    editor_key = await key_id(api, "editor")
    assert rows == [
        {
            "principal": f"api_key:{viewer_key}",
            "route": "GET /v2/crud/event/{id}",
            "successor": "GET /v3/crud/event/{id}",
            "calls": 4,
        },
        {
            "principal": f"api_key:{editor_key}",
            "route": "POST /crud/event",
            "successor": "POST /v3/crud/event",
            "calls": 1,
        },
        {
            "principal": f"api_key:{editor_key}",
            "route": "PUT /crud/event/{id}",
            "successor": "PATCH /v3/crud/event/{id}",
            "calls": 1,
        },
    ]
    assert all(u["last_called_at"].endswith("Z") for u in r.json()["data"])
    for role in ("viewer", "editor"):
        refused = await api.client.get("/v3/action/legacy-usage", headers=api.a.headers(role))
        assert refused.status_code == 403
    owner = await api.client.get("/v3/action/legacy-usage", headers=api.a.headers("owner"))
    assert owner.json() == r.json()
    other = await api.client.get("/v3/action/legacy-usage", headers=api.b.headers("admin"))
    assert [u["route"] for u in other.json()["data"]] == ["GET /v2/crud/event"]
    system = await api.client.get("/v3/action/legacy-usage", headers={"X-API-Key": api.system_key})
    assert system.status_code == 403
    bad = await api.client.get("/v3/action/legacy-usage?all=1", headers=api.a.headers("admin"))
    assert bad.status_code == 422


async def key_id(api: Api, role: str) -> str:
    r = await api.client.get("/v3/crud/api_key", headers=api.a.headers("owner"))
    (found,) = [k for k in r.json()["data"] if k["name"] == f"{role} key"]
    return str(found["id"])


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("value", [False, True])
async def test_switched_off_the_legacy_paths_are_unknown(
    database_url: str, tmp_path: Path, value: bool
) -> None:
    made = await make_api(make_settings(database_url, tmp_path, legacy_routes=value), None)
    async with made.client as client:
        h = made.a.headers("admin")
        document = (await client.get("/openapi.json")).json()
        validate(document)  # the served document, actions included, on or off
        paths = document["paths"]
        legacy = [p for p in paths if not p.startswith("/v3/") and "crud" in p]
        legacy += [p for p in paths if p == "/v3/action/legacy-usage"]
        for url in ("/crud/event", "/v2/crud/event", "/v3/action/legacy-usage"):
            r = await client.get(url, headers=h)
            assert r.status_code == (200 if value else 404), (url, r.text)
            if not value:
                unknown = await client.get(url.replace("crud", "nothing"), headers=h)
                assert r.json() | {"detail": "", "instance": "", "request_id": ""} == (
                    unknown.json() | {"detail": "", "instance": "", "request_id": ""}
                )
                assert "deprecation" not in r.headers
        if value:
            assert "/crud/event/{id}" in legacy and "/v2/crud/event/search" in legacy
            assert paths["/crud/event/{id}"]["put"]["deprecated"] is True
        else:
            assert legacy == []
    await made.runtime.close()


# -- the Redis store ------------------------------------------------------------------------


@pytest.fixture
async def namespace(redis_test_url: str) -> AsyncIterator[str]:
    name = f"aether-test:{secrets.token_hex(6)}:"
    yield name
    await drop_redis_namespace(redis_test_url, name)


async def test_two_redis_stores_share_the_counts(redis_test_url: str, namespace: str) -> None:
    a = RedisUsageStore(redis_test_url, namespace=namespace)
    b = RedisUsageStore(redis_test_url, namespace=namespace)
    try:
        await a.record("acct1", "api_key:k1", "GET /crud/event")
        await b.record("acct1", "api_key:k1", "GET /crud/event")
        await b.record("acct1", "user:u1", "PUT /v2/crud/event/{id}")
        await b.record("acct2", "user:u2", "GET /crud/event")
        for store in (a, b):
            rows = await store.read("acct1")
            assert [(u.principal, u.route, u.calls) for u in rows] == [
                ("api_key:k1", "GET /crud/event", 2),
                ("user:u1", "PUT /v2/crud/event/{id}", 1),
            ]
            assert rows[1].successor == "PATCH /v3/crud/event/{id}"
        client = redis.from_url(redis_test_url)
        try:
            keys = sorted([k.decode() async for k in client.scan_iter(match=namespace + "*")])
            ttl = await client.ttl(f"{namespace}{{legacy}}:calls:acct1")
        finally:
            await client.aclose()
        assert keys == [
            f"{namespace}{{legacy}}:{kind}:{acct}"
            for kind in ("calls", "last")
            for acct in ("acct1", "acct2")
        ]
        assert 0 < ttl <= 90 * 24 * 3600
    finally:
        await a.close()
        await b.close()


async def test_a_dead_redis_counts_in_memory_and_never_fails() -> None:
    store = RedisUsageStore("redis://127.0.0.1:1/0")
    try:
        await store.record("acct", "api_key:k", "GET /crud/event")
        await store.record("acct", "api_key:k", "GET /crud/event")
        rows = await store.read("acct")
        assert [(u.principal, u.calls) for u in rows] == [("api_key:k", 2)]
    finally:
        await store.close()


def test_the_default_sunset_is_an_http_date() -> None:
    import email.utils

    assert email.utils.parsedate_to_datetime(DEFAULT_LEGACY_SUNSET).tzinfo is not None


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_browsers_may_put_and_read_the_headers_cross_origin(
    database_url: str, tmp_path: Path
) -> None:
    origin = "https://console.example"
    settings = make_settings(database_url, tmp_path, legacy_routes=True, cors_origins=(origin,))
    made = await make_api(settings, None)
    async with made.client as client:
        preflight = await client.options(
            "/crud/event/x",
            headers={"Origin": origin, "Access-Control-Request-Method": "PUT"},
        )
        assert preflight.status_code == 200, preflight.text
        assert "PUT" in preflight.headers["access-control-allow-methods"]
        r = await client.get("/crud/event", headers={**made.a.headers(), "Origin": origin})
        exposed = r.headers["access-control-expose-headers"]
        assert {"Deprecation", "Sunset", "Link"} <= {h.strip() for h in exposed.split(",")}
    await made.runtime.close()
