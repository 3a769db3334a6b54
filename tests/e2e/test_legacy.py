"""Legacy routes on a real `aether serve`: the same stored results through V3, `/v2/crud` and
`/crud`; the Deprecation, Sunset and successor Link headers on every legacy answer; the
warning per call; the usage counts (shared through Redis by two servers); and, switched off,
404 like any unknown path and nothing in the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.backends import check_redis, redis_url, unavailable
from tests.e2e.conftest import AetherEnv, ServerProcess, aether_env, sqlite_url

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
EVENT = {"name": "Legacy Gala", "starts_at": "2027-05-01T09:00:00+02:00", "venue": "Hall A"}
SUNSET = "Fri, 31 Dec 2027 00:00:00 GMT"  # AE_LEGACY_SUNSET=2027-12-31 as sent
LEGACY = ("/v2/crud", "/crud")


def make_keys(env: AetherEnv, slug: str) -> dict[str, dict[str, str]]:
    """An account `slug` with one key per role: {role: {"id", "api_key"}}."""
    owner = env.create_account(slug)
    keys = {"owner": {"id": "", "api_key": owner["api_key"]}}
    for role in ("viewer", "editor", "admin"):
        made = env.cli_json(
            "create-api-key", "--account", slug, "--name", f"{role} key", "--role", role
        )
        keys[role] = {"id": made["id"], "api_key": made["api_key"]}
    keys["account"] = {"id": owner["account_id"], "api_key": ""}
    return keys


class Checked:
    """A client for one key that checks the three headers on every legacy answer."""

    def __init__(self, server: ServerProcess, key: str | None) -> None:
        self.client = server.client(headers={"X-API-Key": key} if key else {})
        self.answers = 0

    def __enter__(self) -> Checked:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        r = self.client.request(method, url, **kw)
        path = url.split("?")[0]
        if path.startswith(LEGACY):
            tail = path.removeprefix("/v2").removeprefix("/crud").rstrip("/")
            assert r.headers.get("deprecation") == "@1767225600", (method, url, r.headers)
            assert r.headers.get("sunset") == SUNSET, (method, url)
            successor = f"</v3/crud{tail}>; " + 'rel="successor-version"'
            assert r.headers.get("link") == successor, (method, url, r.headers.get("link"))
            self.answers += 1
        else:
            assert "deprecation" not in r.headers and "sunset" not in r.headers
        return r


def data(prefix: str, r: httpx.Response) -> Any:
    return r.json() if prefix == "/v3/crud" else r.json()["data"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    root = tmp_path_factory.mktemp("legacy")
    with aether_env(
        sqlite_url(root), root / "work", AE_LEGACY_ROUTES="true", AE_LEGACY_SUNSET="2027-12-31"
    ) as env:
        env.cli("migrate")
        keys = {"alpha": make_keys(env, "alpha"), "beta": make_keys(env, "beta")}
        yield env.serve(), keys


def test_every_prefix_gives_the_same_stored_result(site: tuple[ServerProcess, dict]) -> None:
    server, keys = site
    alpha = keys["alpha"]
    with Checked(server, alpha["editor"]["api_key"]) as api:
        made: dict[str, dict] = {}
        for prefix in ("/v3/crud", *LEGACY):
            r = api.send("POST", f"{prefix}/event", json=EVENT)
            assert r.status_code == 201, r.text
            made[prefix] = data(prefix, r)
            assert r.headers["location"] == f"{prefix}/event/{made[prefix]['id']}"
            stored = api.send("GET", f"/v3/crud/event/{made[prefix]['id']}")
            assert stored.json() == made[prefix]
        views = [
            {k: v for k, v in obj.items() if k not in ("id", "created_at", "updated_at")}
            for obj in made.values()
        ]
        assert views[0] == views[1] == views[2]
        assert views[0]["starts_at"] == "2027-05-01T07:00:00Z"

        for prefix, obj in made.items():
            url = f"{prefix}/event/{obj['id']}"
            assert data(prefix, api.send("GET", url)) == obj
            methods = ["PATCH"] if prefix == "/v3/crud" else ["PATCH", "PUT"]
            for i, method in enumerate(methods):
                r = api.send(method, url, json={"capacity": 10 + i})
                assert r.status_code == 200, r.text
                stored = api.send("GET", f"/v3/crud/event/{obj['id']}").json()
                assert data(prefix, r) == stored
                assert stored["capacity"] == 10 + i and stored["venue"] == "Hall A"
                assert stored["version"] == 2 + i
            made[prefix] = stored

        search = {"filter": {"capacity": 11}, "count": True}
        v3 = api.send("POST", "/v3/crud/event/search", json=search).json()
        v2 = api.send("POST", "/v2/crud/event/search", json=search).json()
        assert v2 == {"data": v3["data"], "has_more": False, "total": 2}
        assert {o["id"] for o in v2["data"]} == {made[p]["id"] for p in LEGACY}
        assert api.send("POST", "/crud/event/search", json=search).status_code == 404

        for prefix in LEGACY:
            first = api.send("GET", f"{prefix}/event?limit=2&offset=0&count=true").json()
            rest = api.send("GET", f"{prefix}/event?limit=2&offset=2").json()
            assert first["has_more"] is True and first["total"] == 3
            assert rest["has_more"] is False and "next" not in rest
            listed = api.send("GET", "/v3/crud/event").json()["data"]
            assert first["data"] + rest["data"] == listed

        for prefix, obj in made.items():
            r = api.send("DELETE", f"{prefix}/event/{obj['id']}")
            assert r.status_code == 204, r.text
            assert api.send("GET", f"/v3/crud/event/{obj['id']}").status_code == 404
        assert api.answers == 16  # every legacy answer above was checked


def test_errors_carry_the_headers_too(site: tuple[ServerProcess, dict]) -> None:
    server, keys = site
    alpha, beta = keys["alpha"], keys["beta"]
    with Checked(server, alpha["editor"]["api_key"]) as api:
        event = data("/crud", api.send("POST", "/crud/event", json=EVENT))
        theirs = Checked(server, beta["owner"]["api_key"])
        b_event = data("/crud", theirs.send("POST", "/crud/event", json=EVENT))
        item = f"/crud/event/{event['id']}"
        with Checked(server, None) as anonymous:
            r = anonymous.send("GET", item)
            assert r.status_code == 401 and "www-authenticate" in r.headers
        cases = [
            ("GET", f"/v2/crud/event/{b_event['id']}", {}, 404),  # another account's
            ("PUT", f"/crud/event/{b_event['id']}", {"json": {"venue": "x"}}, 404),
            ("GET", "/v2/crud/nothing", {}, 404),
            ("GET", "/v2/crud/event/a/b", {}, 404),
            ("POST", item, {"json": {}}, 405),
            ("PUT", item, {"json": {"capacity": -1}}, 422),
            ("PUT", item, {"json": {"venue": "x"}, "headers": {"If-Match": '"7"'}}, 412),
            (
                "PATCH",
                item,
                {"content": b"{", "headers": {"Content-Type": "application/json"}},
                400,
            ),
            ("PATCH", item, {"content": b"x", "headers": {"Content-Type": "text/plain"}}, 415),
            ("GET", "/crud/event?limit=0", {}, 422),
            ("POST", "/v2/crud/event/search", {"json": {"filter": {"nope": 1}}}, 422),
            ("GET", item, {"headers": {"If-None-Match": '"1"'}}, 304),
        ]
        for method, url, kw, status in cases:
            r = api.send(method, url, **kw)
            assert r.status_code == status, (method, url, r.status_code, r.text)
            if status >= 400:
                assert r.headers["content-type"] == PROBLEM
        r = api.send("POST", item, json={})
        assert r.headers["allow"] == "GET, HEAD, PATCH, DELETE, PUT"
        # beta's event is untouched:
        assert theirs.send("GET", f"/v3/crud/event/{b_event['id']}").json() == b_event
        theirs.client.close()


def test_usage_counts_calls_per_principal_for_admins(site: tuple[ServerProcess, dict]) -> None:
    server, keys = site
    alpha = keys["alpha"]
    with (
        Checked(server, alpha["viewer"]["api_key"]) as viewer,
        Checked(server, alpha["admin"]["api_key"]) as admin,
    ):
        for _ in range(3):
            assert viewer.send("GET", "/v2/crud/event_session").status_code == 200
        assert viewer.send("GET", "/crud/event_session?limit=5").status_code == 200
        assert admin.send("GET", "/crud/event_session").status_code == 200
        r = admin.send("GET", "/v3/action/legacy-usage")
        assert r.status_code == 200, r.text
        rows = {(u["principal"], u["route"]): u for u in r.json()["data"]}
        viewer_name, admin_name = (f"api_key:{alpha[k]['id']}" for k in ("viewer", "admin"))
        assert rows[(viewer_name, "GET /v2/crud/event_session")]["calls"] == 3
        assert rows[(viewer_name, "GET /v2/crud/event_session")]["successor"] == (
            "GET /v3/crud/event_session"
        )
        assert rows[(viewer_name, "GET /crud/event_session")]["calls"] == 1
        assert rows[(admin_name, "GET /crud/event_session")]["calls"] == 1
        for role in ("viewer", "editor"):
            with Checked(server, alpha[role]["api_key"]) as low:
                refused = low.send("GET", "/v3/action/legacy-usage")
                assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
        with Checked(server, None) as anonymous:
            assert anonymous.send("GET", "/v3/action/legacy-usage").status_code == 401
        with Checked(server, keys["beta"]["admin"]["api_key"]) as beta:
            answer = beta.send("GET", "/v3/action/legacy-usage").json()
            seen = {u["principal"] for u in answer["data"]}
            assert viewer_name not in seen and admin_name not in seen
    line = server.wait_for_log(
        lambda e: (
            e.get("level") == "warning"
            and e.get("logger") == "aether.legacy"
            and viewer_name in e.get("msg", "")
            and "GET /v2/crud/event_session" in e["msg"]
        )
    )
    assert "GET /v3/crud/event_session" in line["msg"] and line["principal"] == viewer_name


def test_the_openapi_document_lists_the_legacy_routes_deprecated(
    site: tuple[ServerProcess, dict],
) -> None:
    server, _ = site
    with server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert paths["/v2/crud/event/search"]["post"]["deprecated"] is True
    assert paths["/crud/event/{id}"]["put"]["x-aether-successor"] == "PATCH /v3/crud/event/{id}"
    assert "/v3/action/legacy-usage" in paths


def stable(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k not in ("detail", "instance", "request_id")}


@pytest.mark.parametrize("setting", ["0", None])
def test_switched_off_legacy_paths_are_unknown(tmp_path: Path, setting: str | None) -> None:
    extra = {} if setting is None else {"AE_LEGACY_ROUTES": setting}
    with aether_env(sqlite_url(tmp_path), tmp_path / "work", **extra) as env:
        env.cli("migrate")
        key = env.create_account("alpha")["api_key"]
        server = env.serve()
        with server.client(headers={"X-API-Key": key}) as client:
            assert client.post("/v3/crud/event", json=EVENT).status_code == 201
            for url in ("/crud/event", "/v2/crud/event", "/v2/crud/event/search"):
                r = client.get(url)
                unknown = client.get(url.replace("crud", "nothing"))
                assert r.status_code == unknown.status_code == 404, r.text
                assert r.headers["content-type"] == PROBLEM
                assert stable(r.json()) == stable(unknown.json())
                assert "deprecation" not in r.headers and "link" not in r.headers
            assert client.get("/v3/action/legacy-usage").status_code == 404
            document = client.get("/openapi.json").text
        assert "/crud/event" in document  # the V3 paths are there ...
        assert '"/crud/' not in document and '"/v2/crud' not in document  # ... no legacy one
        assert "legacy-usage" not in document and '"deprecated"' not in document


def test_two_servers_share_the_counts_through_redis(tmp_path: Path) -> None:
    url = redis_url()
    try:
        asyncio.run(check_redis(url))
    except Exception as exc:
        unavailable("redis", exc)
    with aether_env(
        sqlite_url(tmp_path),
        tmp_path / "work",
        AE_LEGACY_ROUTES="1",
        AE_LEGACY_SUNSET=SUNSET,
        AE_REDIS_URL=url,
    ) as env:
        env.cli("migrate")
        keys = make_keys(env, "alpha")
        first, second = env.serve(), env.serve()
        account = keys["account"]["id"]
        try:
            with Checked(first, keys["viewer"]["api_key"]) as one:
                for _ in range(2):
                    assert one.send("GET", "/crud/event").status_code == 200
            with Checked(second, keys["viewer"]["api_key"]) as two:
                assert two.send("GET", "/crud/event").status_code == 200
            for server in (first, second):
                with server.client(headers={"X-API-Key": keys["admin"]["api_key"]}) as admin:
                    rows = admin.get("/v3/action/legacy-usage").json()["data"]
                assert [(u["principal"], u["route"], u["calls"]) for u in rows] == [
                    (f"api_key:{keys['viewer']['id']}", "GET /crud/event", 3)
                ]
            client = redis.Redis.from_url(url)
            try:
                assert client.hgetall(f"ae:{{legacy}}:calls:{account}") == {
                    f"api_key:{keys['viewer']['id']} GET /crud/event".encode(): b"3"
                }
            finally:
                client.close()
        finally:
            client = redis.Redis.from_url(url)
            try:
                client.delete(f"ae:{{legacy}}:calls:{account}", f"ae:{{legacy}}:last:{account}")
            finally:
                client.close()
