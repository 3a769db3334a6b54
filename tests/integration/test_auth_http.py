"""Authentication and roles through HTTP (SPEC 4, 5; RELIABILITY S4, S6, S7, S8).

Attack JWTs, API key refusals and revocation, login uniformity, the role matrix built from
the registry (the role is checked before the body is read), mass assignment of read-only
fields, and role escalation by an admin.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import OctKey

from engine.auth.api_keys import _checksum, generate_api_key
from engine.provisioning import find_account, insert_api_key
from tests.integration.conftest import Api
from tests.integration.test_isolation import random_id, sample_body, sample_value
from tests.statements import count_statements as statements_of

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
PROBLEM_JSON = "application/problem+json"
PASSWORD = "a very long password"


@pytest.fixture(params=["memory", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on an app caching in memory and on one caching in Redis."""
    return str(request.param)


def problem(r: httpx.Response) -> dict[str, Any]:
    """A problem body without the fields that differ per request."""
    assert r.headers["content-type"] == PROBLEM_JSON, r.text
    return {k: v for k, v in r.json().items() if k not in ("request_id", "instance")}


def assert_401(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"]
    return problem(r)


@contextmanager
def count_statements(api: Api) -> Iterator[list[str]]:
    """Every SQL statement the app's engines send while the block runs."""
    with statements_of(api.runtime) as seen:
        yield seen


# -- JWTs -------------------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def sign(claims: dict[str, Any], key: str, header: dict[str, Any] | None = None) -> str:
    return jose_jwt.encode(header or {"alg": "HS256"}, claims, OctKey.import_key(key.encode()))


ATTACKER_KEY = "the attacker's own key, long enough for HS256"
ATTACKER_JWK = {"kty": "oct", "k": base64.urlsafe_b64encode(ATTACKER_KEY.encode()).decode()}


def attack_tokens(api: Api) -> dict[str, str]:
    """Tokens that must fail verification itself (no database work allowed)."""
    key = api.runtime.settings.jwt_key
    now = int(time.time())
    good = {"sub": random_id(), "acct": api.a.account_id, "role": "owner", "exp": now + 600}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(good)}"
    bare = {k: v for k, v in good.items() if k != "exp"}
    return {
        "alg none, empty signature": unsigned + ".",
        "alg none, some signature": unsigned + ".c2ln",
        "wrong key": sign(good, "another secret key that is long enough to sign"),
        "expired": sign({**good, "exp": now - 3600}, key),
        "no exp": sign(bare, key),
        "nbf in the future": sign({**good, "nbf": now + 3600}, key),
        "wrong role claim": sign({**good, "role": "superuser"}, key),
        "role not a string": sign({**good, "role": ["owner"]}, key),
        "no acct": sign({k: v for k, v in good.items() if k != "acct"}, key),
        "kid path": sign(good, key, {"alg": "HS256", "kid": "../../x"}),
        "kid sql": sign(good, key, {"alg": "HS256", "kid": "' OR 1=1"}),
        "embedded jwk": sign(good, ATTACKER_KEY, {"alg": "HS256", "jwk": ATTACKER_JWK}),
        "HS512 not allowed": jose_jwt.encode(
            {"alg": "HS512"}, good, OctKey.import_key(key.encode()), ["HS512"]
        ),
        "tampered payload": ".".join(
            (lambda s: [s[0], _b64({**good, "role": "owner", "sub": "x"}), s[2]])(
                sign({**good, "role": "viewer"}, key).split(".")
            )
        ),
        "garbage": "garbage",
        "two segments": "abc.def",
        "not json": "bm90.anNvbg.c2ln",
        "huge": "a" * 6000 + "." + "b" * 6000 + ".c",
    }


@SQLITE_ONLY
async def test_attack_jwts_are_401_before_any_database_work(api: Api) -> None:
    key = api.runtime.settings.jwt_key
    now = int(time.time())
    good_claims = {"sub": random_id(), "acct": api.a.account_id, "role": "viewer"}
    good = sign({**good_claims, "exp": now + 600}, key)
    with count_statements(api) as control:
        ok = await api.client.get("/v3/crud/event", headers={"Authorization": f"Bearer {good}"})
    assert ok.status_code == 200, ok.text
    assert control, "the statement counter sees the app's queries"

    bodies: dict[str, dict[str, Any]] = {}
    for name, token in attack_tokens(api).items():
        with count_statements(api) as seen:
            r = await api.client.get("/v3/crud/event", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, (name, r.text)
        bodies[name] = assert_401(r)
        assert seen == [], (name, seen)
    shapes = {(b["type"], b["title"], b["status"], tuple(sorted(b))) for b in bodies.values()}
    assert len(shapes) == 1, bodies

    # A system role in a JWT passes the signature check and is refused without a query.
    system = sign({**good_claims, "role": "system", "exp": now + 600}, key)
    with count_statements(api) as seen:
        r = await api.client.get("/v3/crud/event", headers={"Authorization": f"Bearer {system}"})
    assert assert_401(r) == bodies["wrong key"] and seen == []
    # A valid signature for an account that does not exist: one lookup, the same 401.
    ghost = sign({**good_claims, "acct": random_id(), "exp": now + 600}, key)
    r = await api.client.get("/v3/crud/event", headers={"Authorization": f"Bearer {ghost}"})
    assert assert_401(r) == bodies["wrong key"]


# -- API keys ---------------------------------------------------------------------------------


def wrong_secret(key: str) -> str:
    """A well-formed key (valid checksum) with `key`'s prefix and another secret."""
    prefix = key.split("_")[1]
    body = generate_api_key().key.split("_")[2][:52]
    return f"ae_{prefix}_{body}{_checksum(f'ae_{prefix}_{body}')}"


async def status_with_key(api: Api, key: str) -> int:
    return (await api.client.get("/v3/crud/event", headers={"X-API-Key": key})).status_code


async def test_api_key_refusals_are_uniform_and_immediate(api: Api) -> None:
    owner = api.a.headers("owner")
    unknown = await api.client.get("/v3/crud/event", headers={"X-API-Key": generate_api_key().key})
    wrong = await api.client.get(
        "/v3/crud/event", headers={"X-API-Key": wrong_secret(api.a.keys["owner"])}
    )
    as_scheme = await api.client.get(
        "/v3/crud/event", headers={"Authorization": f"ApiKey {wrong_secret(api.a.keys['owner'])}"}
    )
    assert assert_401(unknown) == assert_401(wrong) == assert_401(as_scheme)
    assert sorted(unknown.headers) == sorted(wrong.headers)

    # A key (or token) in the query string is not a credential.
    for param in ("api_key", "apikey", "key", "access_token", "token"):
        r = await api.client.get(f"/v3/crud/event?{param}={api.a.keys['owner']}")
        assert_401(r)

    async def new_key(**extra: Any) -> tuple[str, str]:
        r = await api.client.post(
            "/v3/action/api_key", json={"name": "k", "role": "editor", **extra}, headers=owner
        )
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["key"]

    key_id, key = await new_key()
    assert await status_with_key(api, key) == 200
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    r = await api.client.patch(
        f"/v3/crud/api_key/{key_id}", json={"revoked_at": past}, headers=owner
    )
    assert r.status_code == 200, r.text
    assert await status_with_key(api, key) == 401

    key_id, key = await new_key()
    assert await status_with_key(api, key) == 200
    r = await api.client.delete(f"/v3/crud/api_key/{key_id}", headers=owner)
    assert r.status_code == 204
    assert await status_with_key(api, key) == 401

    # A revocation dated in the future has not happened yet.
    key_id, key = await new_key()
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    r = await api.client.patch(
        f"/v3/crud/api_key/{key_id}", json={"revoked_at": later}, headers=owner
    )
    assert r.status_code == 200 and await status_with_key(api, key) == 200

    rt = api.runtime
    async with rt.engine.begin() as conn:
        found = await find_account(conn, rt.tables, api.a.slug)
        assert found is not None
        pk = found[0]
        now = dt.datetime.now(dt.UTC)
        expired = await insert_api_key(
            conn,
            rt.tables,
            account_id=pk,
            name="old",
            role="editor",
            expires_at=now - dt.timedelta(seconds=2),
        )
        fresh = await insert_api_key(
            conn,
            rt.tables,
            account_id=pk,
            name="new",
            role="editor",
            expires_at=now + dt.timedelta(hours=1),
        )
    assert await status_with_key(api, expired.key) == 401
    assert await status_with_key(api, fresh.key) == 200


@SQLITE_ONLY
async def test_key_creation_respects_the_callers_role(api: Api) -> None:
    url = "/v3/action/api_key"
    too_high = await api.client.post(
        url, json={"name": "x", "role": "owner"}, headers=api.a.headers("admin")
    )
    assert too_high.status_code == 403
    same = await api.client.post(
        url, json={"name": "x", "role": "admin"}, headers=api.a.headers("admin")
    )
    assert same.status_code == 201, same.text
    for role in ("editor", "viewer"):
        r = await api.client.post(
            url, json={"name": "x", "role": "viewer"}, headers=api.a.headers(role)
        )
        assert r.status_code == 403, (role, r.text)
        invalid = await api.client.post(url, json={"bogus": 1}, headers=api.a.headers(role))
        assert invalid.status_code == 403, (role, invalid.text)
    system = await api.client.post(
        url, json={"name": "x", "role": "viewer"}, headers={"X-API-Key": api.system_key}
    )
    assert system.status_code == 403


# -- the role matrix --------------------------------------------------------------------------

ROLES = ("viewer", "editor", "admin", "owner")


def rank(role: str) -> int:
    return ROLES.index(role)


@SQLITE_ONLY
async def test_role_matrix_from_the_registry(api: Api) -> None:
    """Below a type's role: 403 for every method, whatever the body (it is never read)."""
    failures: list[str] = []
    some_id = random_id()
    for obj in api.runtime.registry:
        perms = obj.permissions
        calls: list[tuple[str, str, bool, bool]] = [  # method, path, is_write, offered
            ("GET", f"/v3/crud/{obj.name}", False, True),
            ("GET", f"/v3/crud/{obj.name}/{some_id}", False, True),
            ("POST", f"/v3/crud/{obj.name}/search", False, True),
            ("GET", f"/v3/crud/{obj.name}/schema", False, True),
            ("POST", f"/v3/crud/{obj.name}", True, perms.create),
            ("PATCH", f"/v3/crud/{obj.name}/{some_id}", True, perms.update),
            ("DELETE", f"/v3/crud/{obj.name}/{some_id}", True, perms.delete),
        ]
        for role in ROLES:
            for method, path, is_write, offered in calls:
                needed = perms.write_role if is_write else perms.read_role
                body = b'{"bogus_field": [1, 2' if method != "GET" else None  # invalid JSON
                r = await api.client.request(
                    method, path, content=body, headers=api.a.headers(role)
                )
                if not offered:
                    expected: set[int] = {405}
                elif rank(role) < rank(needed):
                    expected = {403}
                else:
                    expected = {200, 400, 404, 422}
                if r.status_code not in expected:
                    failures.append(f"{role} {method} {path}: {r.status_code} not in {expected}")
    assert not failures, "\n".join(failures)


@SQLITE_ONLY
async def test_viewer_cannot_upload(api: Api) -> None:
    r = await api.client.post(
        "/v3/crud/event",
        json=sample_body(api.runtime.registry["event"], {}),
        headers=api.a.headers(),
    )
    event_id = r.json()["id"]
    up = await api.client.post(
        f"/v3/action/event/{event_id}/upload",
        files=[("file", ("a.txt", b"hello", "text/plain"))],
        headers=api.a.headers("viewer"),
    )
    assert up.status_code == 403


# -- login ------------------------------------------------------------------------------------


async def test_login_failures_are_identical_and_success_is_recorded(api: Api) -> None:
    owner = api.a.headers("owner")
    r = await api.client.post(
        "/v3/crud/user", json={"email": "ann@alpha.test", "password": PASSWORD}, headers=owner
    )
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["last_login_at"] is None
    r = await api.client.post(
        "/v3/crud/user", json={"email": "off@alpha.test", "password": PASSWORD}, headers=owner
    )
    inactive = r.json()
    r = await api.client.patch(
        f"/v3/crud/user/{inactive['id']}", json={"is_active": False}, headers=owner
    )
    assert r.status_code == 200 and r.json()["is_active"] is False

    def creds(**over: str) -> dict[str, str]:
        return {"account": "alpha", "email": "ann@alpha.test", "password": PASSWORD, **over}

    attempts = {
        "wrong account": creds(account="nowhere"),
        "other tenant": creds(account="beta"),
        "wrong email": creds(email="nobody@alpha.test"),
        "wrong password": creds(password="not the password"),
        "inactive": creds(email="off@alpha.test"),
    }
    bodies = {}
    for name, body in attempts.items():
        r = await api.client.post("/v3/auth/login", json=body)
        bodies[name] = assert_401(r)
    assert len({json.dumps(b, sort_keys=True) for b in bodies.values()}) == 1, bodies

    ok = await api.client.post("/v3/auth/login", json=creds())
    assert ok.status_code == 200, ok.text
    assert ok.headers["cache-control"] == "no-store"
    token = ok.json()["access_token"]
    me = await api.client.get(f"/v3/crud/user/{user['id']}", headers=owner)
    assert me.json()["last_login_at"] is not None
    off = await api.client.get(f"/v3/crud/user/{inactive['id']}", headers=owner)
    assert off.json()["last_login_at"] is None
    r = await api.client.get("/v3/crud/event", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


# -- mass assignment --------------------------------------------------------------------------


def forced_values(api: Api, obj_name: str, own: dict[str, Any]) -> dict[str, Any]:
    """A value for every read-only field of the type (the object's own value where it has one)."""
    obj = api.runtime.registry[obj_name]
    out: dict[str, Any] = {}
    for f in obj.fields:
        if f.read_only:
            if f.kind == "integer":
                out[f.name] = 99
            elif f.name == "sha256":
                out[f.name] = "0" * 64
            elif f.kind in ("reference", "id"):
                out[f.name] = own.get(f.name) or random_id()
            else:
                out[f.name] = sample_value(f, {})
    return out


@SQLITE_ONLY
async def test_mass_assignment_is_refused_naming_each_field(api: Api) -> None:
    reg = api.runtime.registry
    owner = api.a.headers("owner")
    made: dict[str, dict[str, Any]] = {"account": {"id": api.a.account_id}}
    ids = {"account": api.a.account_id}
    failures: list[str] = []
    for obj in reg:
        body = sample_body(obj, ids)
        if not obj.permissions.create or body is None:
            continue
        forced = forced_values(api, obj.name, {"account_id": api.a.account_id})
        r = await api.client.post(f"/v3/crud/{obj.name}", json={**body, **forced}, headers=owner)
        paths = {e["path"] for e in r.json().get("errors", [])}
        if r.status_code != 422 or not set(forced) <= paths:
            failures.append(f"POST {obj.name}: {r.status_code} {sorted(paths)} vs {sorted(forced)}")
        r = await api.client.post(f"/v3/crud/{obj.name}", json=body, headers=owner)
        assert r.status_code == 201, r.text
        made[obj.name] = r.json()
        ids[obj.name] = r.json()["id"]
    # PATCH on one object of every type that offers it, files included (from an upload).
    up = await api.client.post(
        f"/v3/action/event/{ids['event']}/upload",
        files=[("file", ("a.txt", b"mass assignment", "text/plain"))],
        headers=owner,
    )
    made["file"] = up.json()["files"][0]
    keys = await api.client.get("/v3/crud/api_key?limit=1", headers=owner)
    made["api_key"] = keys.json()["data"][0]
    for name, current in made.items():
        obj = reg[name]
        if not obj.permissions.update:
            continue
        url = f"/v3/crud/{name}/{current['id']}"
        before = (await api.client.get(url, headers=owner)).json()
        forced = forced_values(api, name, before)
        r = await api.client.patch(url, json=forced, headers=owner)
        paths = {e["path"] for e in r.json().get("errors", [])}
        if r.status_code != 422 or not set(forced) <= paths:
            failures.append(f"PATCH {name}: {r.status_code} {sorted(paths)} vs {sorted(forced)}")
        after = (await api.client.get(url, headers=owner)).json()
        if before != after:
            failures.append(f"PATCH {name} changed the object: {before} -> {after}")
    assert not failures, "\n".join(failures)


# -- role escalation --------------------------------------------------------------------------


@SQLITE_ONLY
async def test_admin_cannot_grant_or_touch_a_higher_role(api: Api) -> None:
    """An admin manages users and keys, but cannot make, edit or remove an owner."""
    admin = api.a.headers("admin")
    r = await api.client.post(
        "/v3/crud/user", json={"email": "o@alpha.test", "role": "owner"}, headers=admin
    )
    assert r.status_code == 403, r.text
    r = await api.client.post(
        "/v3/crud/user", json={"email": "u@alpha.test", "role": "admin"}, headers=admin
    )
    assert r.status_code == 201, r.text
    user_url = f"/v3/crud/user/{r.json()['id']}"
    r = await api.client.patch(user_url, json={"role": "owner"}, headers=admin)
    assert r.status_code == 403, r.text
    assert (await api.client.get(user_url, headers=admin)).json()["role"] == "admin"

    owners = await api.client.get(
        "/v3/crud/user?filter=" + json.dumps({"role": "owner"}), headers=admin
    )
    owner_user = owners.json()["data"][0]
    owner_url = f"/v3/crud/user/{owner_user['id']}"
    for method, body in (("PATCH", {"password": "taken over by admin"}), ("DELETE", None)):
        r = await api.client.request(method, owner_url, json=body, headers=admin)
        assert r.status_code == 403, (method, r.text)
    assert (await api.client.get(owner_url, headers=admin)).json() == owner_user

    keys = await api.client.get(
        "/v3/crud/api_key?filter=" + json.dumps({"role": "owner"}), headers=admin
    )
    owner_key_url = f"/v3/crud/api_key/{keys.json()['data'][0]['id']}"
    past = "2020-01-01T00:00:00Z"
    for method, body in (("PATCH", {"revoked_at": past}), ("DELETE", None)):
        r = await api.client.request(method, owner_key_url, json=body, headers=admin)
        assert r.status_code == 403, (method, r.text)
    assert await status_with_key(api, api.a.keys["owner"]) == 200
    # The owner can do what the admin could not.
    r = await api.client.patch(user_url, json={"role": "owner"}, headers=api.a.headers("owner"))
    assert r.status_code == 200 and r.json()["role"] == "owner"


async def test_a_role_above_the_callers_is_403_before_the_body_is_validated(api: Api) -> None:
    """Authorisation before validation: an admin granting `owner` gets 403 whatever else
    is wrong with the body, on create and on update; nothing is written."""
    admin = api.a.headers("admin")
    before = (await api.client.get("/v3/crud/user", headers=admin)).json()["data"]
    for body in (
        {"email": "not an email", "role": "owner"},
        {"email": "o@alpha.test", "role": "owner", "bogus": 1},
        {"role": "owner"},  # the required email missing too
    ):
        r = await api.client.post("/v3/crud/user", json=body, headers=admin)
        assert r.status_code == 403, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    # the same bad email with a role the admin may grant is a plain 422
    r = await api.client.post(
        "/v3/crud/user", json={"email": "not an email", "role": "viewer"}, headers=admin
    )
    assert r.status_code == 422, r.text
    assert (await api.client.get("/v3/crud/user", headers=admin)).json()["data"] == before

    r = await api.client.post(
        "/v3/crud/user", json={"email": "v@alpha.test", "role": "viewer"}, headers=admin
    )
    assert r.status_code == 201, r.text
    user = r.json()
    url = f"/v3/crud/user/{user['id']}"
    for body in (
        {"role": "owner", "email": "not an email"},
        {"role": "owner", "bogus": 1},
    ):
        r = await api.client.patch(url, json=body, headers=admin)
        assert r.status_code == 403, (body, r.text)
    r = await api.client.patch(url, json={"role": "editor", "email": "not an email"}, headers=admin)
    assert r.status_code == 422, r.text
    assert (await api.client.get(url, headers=admin)).json() == user
