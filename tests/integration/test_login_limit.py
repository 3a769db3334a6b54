"""The failed-login limit over HTTP, per account and email and per address (SPEC 4, 8).

Runs on every database backend, with the in-process cache and with Redis. The limiter's
clock is pinned so a window passes on demand instead of by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from engine.cache import CacheBackend
from engine.settings import RateLimit
from tests.integration.conftest import Api, make_api, make_settings

PASSWORD = "correct horse battery"
HOUR = 3600
T0 = 1_800_000_000.0 + 100  # inside a one-hour window, far from its end


@pytest.fixture(params=["memory", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def limited_api(
    database_url: str, tmp_path: Path, cache: CacheBackend | None, clock: Clock, **limits: int
) -> Api:
    settings = make_settings(
        database_url,
        tmp_path,
        login_rate_limit=RateLimit(limits.get("account", 1000), HOUR),
        login_address_rate_limit=RateLimit(limits.get("address", 1000), HOUR),
    )
    made = await make_api(settings, cache)
    made.runtime.login_limiter.clock = clock
    return made


@pytest.fixture
async def per_account(
    database_url: str, tmp_path: Path, app_cache: CacheBackend | None, clock: Clock
) -> AsyncIterator[Api]:
    made = await limited_api(database_url, tmp_path, app_cache, clock, account=3)
    async with made.client:
        yield made
    await made.runtime.close()


@pytest.fixture
async def per_address(
    database_url: str, tmp_path: Path, app_cache: CacheBackend | None, clock: Clock
) -> AsyncIterator[Api]:
    made = await limited_api(database_url, tmp_path, app_cache, clock, address=3)
    async with made.client:
        yield made
    await made.runtime.close()


def creds(slug: str = "alpha", password: str = PASSWORD, email: str = "") -> dict[str, str]:
    return {"account": slug, "email": email or f"owner@{slug}.test", "password": password}


async def login(client: httpx.AsyncClient, body: dict[str, str]) -> httpx.Response:
    return await client.post("/v3/auth/login", json=body)


def assert_429(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert 1 <= int(r.headers["retry-after"]) <= HOUR
    assert "access_token" not in r.text


async def test_failed_logins_per_account_then_a_right_password_waits_for_the_window(
    per_account: Api, clock: Clock
) -> None:
    client = per_account.client
    for _ in range(3):
        assert (await login(client, creds(password="wrong password!"))).status_code == 401
    assert_429(await login(client, creds(password="wrong password!")))
    # The right password is refused too until the window passes...
    refused = await login(client, creds())
    assert_429(refused)
    assert int(refused.headers["retry-after"]) == HOUR - 100
    # ...and the email is matched whatever its case.
    assert_429(await login(client, creds(email="OWNER@alpha.test")))
    # Other accounts are not affected.
    assert (await login(client, creds("beta"))).status_code == 200
    clock.now += HOUR
    ok = await login(client, creds())
    assert ok.status_code == 200, ok.text
    assert ok.json()["token_type"] == "Bearer"


async def test_a_successful_login_clears_the_account_failures(per_account: Api) -> None:
    client = per_account.client
    for _ in range(2):
        assert (await login(client, creds(password="wrong password!"))).status_code == 401
    assert (await login(client, creds())).status_code == 200
    for _ in range(3):
        assert (await login(client, creds(password="wrong password!"))).status_code == 401
    assert_429(await login(client, creds()))


async def test_parallel_guesses_cannot_outrun_the_account_limit(per_account: Api) -> None:
    guesses = [login(per_account.client, creds(password=f"guess number {i}")) for i in range(12)]
    statuses = sorted(r.status_code for r in await asyncio.gather(*guesses))
    assert statuses == [401] * 3 + [429] * 9


async def test_failed_logins_per_address(per_address: Api, clock: Clock) -> None:
    client = per_address.client
    for i in range(3):  # a different (unknown) email each time: the address is what counts
        r = await login(client, creds(email=f"guess{i}@alpha.test"))
        assert r.status_code == 401, r.text
    assert_429(await login(client, creds(email="guess9@alpha.test")))
    assert_429(await login(client, creds()))  # the right password, from that address
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=per_address.app, client=("192.0.2.7", 4000)),
        base_url=str(client.base_url),
    )
    async with other:
        assert (await login(other, creds())).status_code == 200
    clock.now += HOUR
    assert (await login(client, creds())).status_code == 200


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
async def test_no_connection_is_held_while_the_password_is_verified(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """argon2 takes tens of milliseconds: the pooled connection goes back first."""
    import engine.auth.login as login_module

    pool = api.runtime.engine.sync_engine.pool
    seen: list[int] = []
    real = login_module.verify_password

    def watching(password: str, stored: str | None) -> bool:
        seen.append(pool.checkedout())  # type: ignore[attr-defined]
        return real(password, stored)

    monkeypatch.setattr(login_module, "verify_password", watching)
    assert (await login(api.client, creds(password="wrong password!"))).status_code == 401
    assert (await login(api.client, creds())).status_code == 200
    assert seen == [0, 0]


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
async def test_a_password_is_hashed_in_a_worker_thread_with_no_connection_held(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating or patching a user with a password runs argon2 off the event loop, before
    any pooled connection is taken (it takes tens of milliseconds)."""
    import threading

    import models.security as security

    real = security._HASHER
    pools = [engine.sync_engine.pool for engine in api.runtime.engines]
    seen: list[tuple[bool, int]] = []

    class Watching:
        def hash(self, value: str) -> str:
            in_loop_thread = threading.current_thread() is threading.main_thread()
            checked_out = sum(p.checkedout() for p in pools)  # type: ignore[attr-defined]
            seen.append((in_loop_thread, checked_out))
            return str(real.hash(value))

    monkeypatch.setattr(security, "_HASHER", Watching())
    created = await api.client.post(
        "/v3/crud/user",
        json={"email": "hashing@alpha.test", "password": "a long enough password"},
        headers=api.a.headers(),
    )
    assert created.status_code == 201, created.text
    patched = await api.client.patch(
        f"/v3/crud/user/{created.json()['id']}",
        json={"password": "another long password"},
        headers=api.a.headers(),
    )
    assert patched.status_code == 200, patched.text
    assert seen == [(False, 0), (False, 0)]
