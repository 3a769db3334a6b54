"""Rate limits across two real server processes sharing one Redis (AE_RATE_LIMIT=5/minute).

Nothing in Redis is flushed: each run uses a fresh account (so a fresh principal key) and
random loopback source addresses (so fresh per-address keys) for its counters.
"""

from __future__ import annotations

import random
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import AetherEnv, ServerProcess, make_env, sqlite_url, wait_healthy

pytestmark = pytest.mark.e2e

LIMIT = 5
PERIOD = 60
PROBLEM = "application/problem+json"
RATELIMIT = re.compile(r'^"default";r=(\d+);t=(\d+)$')


@dataclass
class Pair:
    env: AetherEnv
    a: ServerProcess
    b: ServerProcess
    api_key: str


@dataclass
class Started:
    """This module's pairs by Redis URL, and every environment to stop at its end."""

    pairs: dict[str, Pair] = field(default_factory=dict)
    envs: list[AetherEnv] = field(default_factory=list)


@pytest.fixture(scope="module")
def started() -> Iterator[Started]:
    made = Started()
    try:
        yield made
    finally:
        for env in made.envs:
            env.stop_all()


@pytest.fixture
def pair(redis_test_url: str, started: Started, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """Two servers on one fresh database and one Redis, with a fresh account's owner key."""
    if redis_test_url not in started.pairs:
        root: Path = tmp_path_factory.mktemp("ratelimit")
        env = make_env(
            sqlite_url(root),
            root / "work",
            AE_REDIS_URL=redis_test_url,
            AE_RATE_LIMIT=f"{LIMIT}/minute",
        )
        started.envs.append(env)
        a, b = env.launch(), env.launch()  # they need no schema to start: overlap the CLI
        env.cli("migrate")
        api_key = env.create_account(f"rl-{secrets.token_hex(4)}")["api_key"]
        for server in (a, b):
            assert wait_healthy(server), server.describe()
        started.pairs[redis_test_url] = Pair(env, a, b, api_key)
    return started.pairs[redis_test_url]


def fresh_window(margin: float = 6.0) -> None:
    """Wait for the next fixed window if this one ends within `margin` seconds."""
    left = PERIOD - time.time() % PERIOD
    if left < margin:
        time.sleep(left + 0.2)


def remaining(response: httpx.Response) -> int:
    match = RATELIMIT.match(response.headers["ratelimit"])
    assert match, response.headers["ratelimit"]
    return int(match.group(1))


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 429 and body["request_id"] == response.headers["x-request-id"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= PERIOD
    match = RATELIMIT.match(response.headers["ratelimit"])
    assert match and int(match.group(1)) == 0, response.headers["ratelimit"]
    assert abs(int(match.group(2)) - retry_after) <= 1
    assert response.headers["ratelimit-policy"] == f'"default";q={LIMIT};w={PERIOD}'


def random_loopback() -> str:
    """A loopback source address no other test uses, so its per-address counter is fresh."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def test_principal_limit_is_shared_by_both_servers(pair: Pair) -> None:
    headers = {"X-API-Key": pair.api_key}
    fresh_window()
    with pair.a.client() as a, pair.b.client() as b:
        for n in range(LIMIT):
            r = (a, b)[n % 2].get("/v3/crud/event", headers=headers)
            assert r.status_code == 200, r.text
            assert remaining(r) == LIMIT - 1 - n  # one counter across both processes
        assert_limited(b.get("/v3/crud/event", headers=headers))
        assert_limited(a.get("/v3/crud/event", headers=headers))
    # Unauthenticated callers have their own (per-address) counter.
    with pair.a.client(transport=httpx.HTTPTransport(local_address=random_loopback())) as anon:
        assert anon.get("/v3/crud/event").status_code == 401


def test_anonymous_requests_are_limited_per_address(pair: Pair) -> None:
    address, other = random_loopback(), random_loopback()
    fresh_window()

    def client(server: ServerProcess, source: str) -> httpx.Client:
        return server.client(transport=httpx.HTTPTransport(local_address=source))

    with client(pair.a, address) as a, client(pair.b, address) as b:
        for n in range(LIMIT):
            r = (a, b)[n % 2].get("/v3/crud/event")
            assert r.status_code == 401, r.text
            assert remaining(r) == LIMIT - 1 - n
        assert_limited(a.get("/v3/crud/event"))
        assert_limited(b.get("/v3/crud/event", headers={"X-API-Key": "ae_not_a_real_key"}))
    with client(pair.a, other) as elsewhere:
        fresh = elsewhere.get("/v3/crud/event")
        assert fresh.status_code == 401 and remaining(fresh) == LIMIT - 1
