"""The Redis-backed features on a Redis Cluster and behind a Redis Sentinel.

The deployments are private (three cluster masters; a master and a sentinel), started by
the tests on free loopback ports (`tests/redis_servers.py`). The suites of the features
that keep state in Redis run here again unchanged, imported from their modules: the
cache and rate limiter, upload idempotency and the login limits. The database does not
matter to them, so they run on SQLite. Then what only these deployments can show: keys
spread over the cluster's slots (and a feature's keys that go together share one), the
auth-cache invalidation reaching another worker, and a sentinel URL followed to the master.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.auth.principal_cache import PrincipalCache
from engine.cache import RedisCache
from engine.idempotency import Idempotency
from engine.principal import Principal
from engine.redis_client import connect_url, subscriber
from engine.settings import Settings, load_settings
from tests.backends import drop_redis_namespace
from tests.integration.test_actions import test_idempotency_key_replays_without_writing
from tests.integration.test_cache_redis import (
    test_two_instances_share_values_and_counters,
    test_two_limiters_on_one_redis_share_the_count,
    test_values_ttl_and_delete,
)
from tests.integration.test_login_limit import (
    clock,
    per_account,
    per_address,
    test_a_successful_login_clears_the_account_failures,
    test_failed_logins_per_account_then_a_right_password_waits_for_the_window,
    test_failed_logins_per_address,
    test_parallel_guesses_cannot_outrun_the_account_limit,
)
from tests.redis_servers import RedisDeployment

__all__ = [  # the suites run here again, and the fixtures they need
    "clock",
    "per_account",
    "per_address",
    "test_a_successful_login_clears_the_account_failures",
    "test_failed_logins_per_account_then_a_right_password_waits_for_the_window",
    "test_failed_logins_per_address",
    "test_idempotency_key_replays_without_writing",
    "test_parallel_guesses_cannot_outrun_the_account_limit",
    "test_two_instances_share_values_and_counters",
    "test_two_limiters_on_one_redis_share_the_count",
    "test_values_ttl_and_delete",
]

KINDS = ["redis-cluster", "redis-sentinel"]
CLUSTER_ONLY = pytest.mark.parametrize("cache_backend", ["redis-cluster"])


@pytest.fixture
def backend() -> str:
    """SQLite only: what these suites keep in Redis does not depend on the database."""
    return "sqlite"


@pytest.fixture(params=KINDS)
def cache_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def deployment(cache_backend: str, request: pytest.FixtureRequest) -> RedisDeployment:
    found = request.getfixturevalue(cache_backend.replace("-", "_"))
    assert isinstance(found, RedisDeployment)
    return found


@pytest.fixture
def redis_test_url(deployment: RedisDeployment) -> str:
    """What the imported cache tests call the test Redis: here, the deployment's URL."""
    return deployment.url


@pytest.fixture
async def namespace(deployment: RedisDeployment) -> AsyncIterator[str]:
    name = f"aether-test:{secrets.token_hex(6)}:"
    yield name
    await drop_redis_namespace(deployment.url, name, cluster=deployment.cluster)


@pytest.fixture(autouse=True)
def caches_on_the_deployment(
    deployment: RedisDeployment, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The imported cache tests make `RedisCache(url)`: make it the deployment's kind.

    A cache never raises (it falls back to process memory), so a suite could pass without
    Redis doing anything: every failure a cache meets during the test fails it instead,
    but for timeouts (on a loaded host a command may outlast the cache's half second; a
    command the deployment refuses, such as a cross-slot one, is an error, not a timeout).
    """
    original_init, original_trip = RedisCache.__init__, RedisCache._trip
    failures: list[Exception] = []

    def init(self: RedisCache, url: str, **options: object) -> None:
        options.setdefault("cluster", deployment.cluster)
        original_init(self, url, **options)  # type: ignore[arg-type]

    def trip(self: RedisCache, exc: Exception) -> None:
        if not isinstance(exc, (TimeoutError, RedisTimeoutError)):
            failures.append(exc)
        original_trip(self, exc)

    def raw_client(url: str) -> object:
        return connect_url(url, cluster=deployment.cluster)

    monkeypatch.setattr(RedisCache, "__init__", init)
    monkeypatch.setattr(RedisCache, "_trip", trip)
    monkeypatch.setattr("tests.integration.test_cache_redis.raw_client", raw_client)
    yield
    assert failures == [], f"the cache fell back to memory: {failures!r}"


# -- what only these deployments show -------------------------------------------------------


@CLUSTER_ONLY
async def test_keys_spread_over_the_slots_and_a_features_keys_share_one(
    deployment: RedisDeployment, namespace: str
) -> None:
    cache = RedisCache(deployment.url, cluster=True, namespace=namespace)
    client = connect_url(deployment.url, cluster=True)
    assert isinstance(client, RedisCluster)
    try:
        await client.initialize()
        for i in range(40):
            await cache.set(f"acct:{i}:x", b"v", 60)
            await cache.incr(f"rl:{i}", 60)
        nodes = set()
        for i in range(40):
            node = client.get_node_from_key(f"{namespace}c:acct:{i}:x")
            assert node is not None
            nodes.add(node.name)
            assert await cache.get(f"acct:{i}:x") == b"v"
        assert len(nodes) == 3  # spread over every master, not pinned to one slot

        principal = Principal(
            kind="api_key", subject="k1", account_id=7, account_public_id="a7", role="editor"
        )
        idem = Idempotency(cache, principal, "upload", "retry-1")
        slots = {client.keyslot(namespace + "c:" + k) for k in (idem.record_key, idem.claim_key)}
        assert len(slots) == 1
        assert await idem.begin() is None  # the claim works on the cluster
        await idem.save("fp", 201, {"ok": True})
        replay = await Idempotency(cache, principal, "upload", "retry-1").begin()
        assert replay is not None and replay.body == {"ok": True}
        assert not cache.degraded
    finally:
        await cache.close()
        await client.aclose()


async def test_an_invalidation_reaches_the_other_worker(deployment: RedisDeployment) -> None:
    """What `PrincipalCache` does across workers: a change in one clears the others."""
    made = [PrincipalCache(5.0, deployment.url, cluster=deployment.cluster) for _ in range(2)]
    a, b = made
    try:
        for cache in made:
            await cache.start()
        await asyncio.wait_for(asyncio.gather(a.listening.wait(), b.listening.wait()), 10)
        b.put("key:abc", {"role": "editor"})
        a.put("key:abc", {"role": "editor"})
        await a.invalidate()
        assert a.get("key:abc") is None  # at once where the change was made
        for _ in range(100):
            if b.get("key:abc") is None:
                break
            await asyncio.sleep(0.01)
        assert b.get("key:abc") is None  # within a second in the other
    finally:
        for cache in made:
            await cache.close()


@CLUSTER_ONLY
async def test_a_cluster_subscriber_hears_a_publish_sent_anywhere(
    deployment: RedisDeployment,
) -> None:
    listeners = [await subscriber(deployment.url, cluster=True) for _ in range(6)]
    pubsubs = [client.pubsub() for client in listeners]
    publisher = connect_url(deployment.url, cluster=True)
    try:
        for pubsub in pubsubs:
            await pubsub.subscribe("ae:test:broadcast")
            assert (await pubsub.get_message(timeout=2))["type"] == "subscribe"  # type: ignore[index]
        ports = {client.connection_pool.connection_kwargs["port"] for client in listeners}
        assert len(ports) > 1  # not all on one node (6 picks of 3: 3 in 243 fail by chance)
        await publisher.publish("ae:test:broadcast", b"x")
        for pubsub in pubsubs:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            assert message is not None and message["data"] == b"x"
    finally:
        for pubsub in pubsubs:
            await pubsub.aclose()
        for client in listeners:
            await client.aclose()
        await publisher.aclose()


def test_settings_take_the_deployment(deployment: RedisDeployment) -> None:
    settings = load_settings({"AE_ENV": "test", **deployment.env()}, dotenv=None)
    assert settings.redis_url == deployment.url
    assert settings.redis_cluster is deployment.cluster
    assert isinstance(settings, Settings)
