"""The principal cache across two real server processes.

A key revoked or deleted through one server is refused by the other within a second when
they share Redis (an invalidation message), and within AE_AUTH_CACHE_SECONDS without it.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import AetherEnv, ServerProcess, aether_env, sqlite_url, wait_healthy
from tests.redis_servers import RedisDeployment

pytestmark = pytest.mark.e2e

TTL = 3.0


SLUG = f"ac-{secrets.token_hex(4)}"


def _servers(env: AetherEnv) -> tuple[ServerProcess, ServerProcess, str]:
    a, b = env.launch(), env.launch()
    env.cli("migrate")
    owner = env.create_account(SLUG)["api_key"]
    for server in (a, b):
        assert wait_healthy(server), server.describe()
    return a, b, owner


def _new_key(server: ServerProcess, owner: str) -> tuple[str, str]:
    with server.client() as c:
        r = c.post(
            "/v3/action/api_key",
            json={"name": "cached", "role": "viewer"},
            headers={"X-API-Key": owner},
        )
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def _status(server: ServerProcess, key: str) -> int:
    with server.client() as c:
        return c.get("/v3/crud/event", headers={"X-API-Key": key}).status_code


def _refused_after(server: ServerProcess, key: str, limit: float) -> float:
    """Seconds until `server` refuses `key` (polled), failing past `limit`."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if _status(server, key) == 401:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the key was still accepted after {limit} s")


def _revoke(server: ServerProcess, owner: str, key_id: str) -> None:
    with server.client() as c:
        r = c.patch(
            f"/v3/crud/api_key/{key_id}",
            json={"revoked_at": "2020-01-01T00:00:00Z"},
            headers={"X-API-Key": owner},
        )
    assert r.status_code == 200, r.text


def test_a_revocation_reaches_the_other_worker_within_a_second_over_redis(
    tmp_path: Path, redis_target: RedisDeployment
) -> None:
    """On one Redis server, a Redis Cluster and behind a Sentinel alike."""
    with aether_env(
        sqlite_url(tmp_path), tmp_path / "work", **redis_target.env(),
        AE_AUTH_CACHE_SECONDS="5",
    ) as env:  # fmt: skip
        a, b, owner = _servers(env)
        key_id, key = _new_key(a, owner)
        assert _status(b, key) == 200  # b now holds the key in its cache
        time.sleep(1.5)  # b's listener is subscribed well before the change
        _revoke(a, owner, key_id)
        assert _status(a, key) == 401  # at once where the change was made
        assert _refused_after(b, key, 1.0) < 1.0
        for server in (a, b):  # and Redis served every request: no fallback to memory
            with server.client() as c:
                assert c.get("/readyz").json()["checks"]["redis"] == "ok"
            assert "redis unavailable" not in server.stdout() + server.stderr()


def test_without_redis_a_deletion_holds_within_the_cache_lifetime(tmp_path: Path) -> None:
    with aether_env(sqlite_url(tmp_path), tmp_path / "work", AE_AUTH_CACHE_SECONDS=str(TTL)) as env:
        a, b, owner = _servers(env)
        key_id, key = _new_key(a, owner)
        assert _status(b, key) == 200
        with a.client() as c:
            gone = c.delete(f"/v3/crud/api_key/{key_id}", headers={"X-API-Key": owner})
        assert gone.status_code == 204, gone.text
        assert _status(a, key) == 401
        assert _refused_after(b, key, TTL + 1.0) <= TTL + 0.5


def test_a_deactivated_user_loses_access_at_once(tmp_path: Path) -> None:
    with aether_env(sqlite_url(tmp_path), tmp_path / "work") as env:
        a, _, owner = _servers(env)
        email, password = f"u{secrets.token_hex(3)}@example.com", "a long enough password"
        with a.client() as c:
            made = c.post(
                "/v3/crud/user",
                json={"email": email, "password": password, "role": "editor"},
                headers={"X-API-Key": owner},
            )
            assert made.status_code == 201, made.text
            token = c.post(
                "/v3/auth/login", json={"account": SLUG, "email": email, "password": password}
            )
            assert token.status_code == 200, token.text
            bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
            assert c.get("/v3/crud/event", headers=bearer).status_code == 200
            url = f"/v3/crud/user/{made.json()['id']}"
            demoted = c.patch(url, json={"role": "viewer"}, headers={"X-API-Key": owner})
            assert demoted.status_code == 200, demoted.text
            write = c.post("/v3/crud/event", json={"name": "x"}, headers=bearer)
            assert write.status_code == 403, write.text  # the lower role holds at once
            off = c.patch(url, json={"is_active": False}, headers={"X-API-Key": owner})
            assert off.status_code == 200, off.text
            assert c.get("/v3/crud/event", headers=bearer).status_code == 401


def test_cache_lifetime_is_bounded() -> None:
    from engine.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="AE_AUTH_CACHE_SECONDS"):
        load_settings({"AE_AUTH_CACHE_SECONDS": "60"}, dotenv=None)
    assert load_settings({}, dotenv=None).auth_cache_seconds == 5.0
