"""RedisCache on a real Redis: sharing between instances, outages, hangs and recovery.

Each test uses its own key namespace. Outages are made with a TCP proxy in front of the
test Redis (stopped and restarted) or with a server that accepts and never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as redis

from engine.cache import RedisCache
from engine.ratelimit import RateLimiter
from tests.backends import drop_redis_namespace

DEAD_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
async def namespace(redis_test_url: str) -> AsyncIterator[str]:
    name = f"aether-test:{secrets.token_hex(6)}:"
    yield name
    await drop_redis_namespace(redis_test_url, name)


@contextlib.asynccontextmanager
async def caches(*urls: str, **options: object) -> AsyncIterator[list[RedisCache]]:
    made = [RedisCache(url, **options) for url in urls]  # type: ignore[arg-type]
    try:
        yield made
    finally:
        for cache in made:
            await cache.close()


class Proxy:
    """A TCP relay to Redis that can be stopped (connection refused) and restarted."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()


def raw_client(url: str) -> redis.Redis:
    """A client of one's own on the test Redis (the cluster suite swaps in a cluster's)."""
    return redis.from_url(url)


def via_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


async def test_values_ttl_and_delete(redis_test_url: str, namespace: str) -> None:
    async with caches(redis_test_url, namespace=namespace) as (cache,):
        assert await cache.get("acct:1:x") is None
        await cache.set("acct:1:x", b"value:with:colons", 0.3)
        assert await cache.get("acct:1:x") == b"value:with:colons"
        await asyncio.sleep(0.4)
        assert await cache.get("acct:1:x") is None
        await cache.set("acct:1:y", b"y", 60)
        await cache.delete("acct:1:y")
        assert await cache.get("acct:1:y") is None
        assert await cache.ping()
        assert not cache.degraded


async def test_two_instances_share_values_and_counters(redis_test_url: str, namespace: str) -> None:
    async with caches(redis_test_url, redis_test_url, namespace=namespace) as (a, b):
        await a.set("k", b"from-a", 60)
        assert await b.get("k") == b"from-a"
        counts = [await a.incr("n", 60), await b.incr("n", 60), await a.incr("n", 60)]
        assert counts == [1, 2, 3]
        many = await asyncio.gather(*(b.incr("m", 60) for _ in range(50)))
        assert sorted(many) == list(range(1, 51))
        raw = raw_client(redis_test_url)
        try:
            ttl = await raw.ttl(namespace + "c:n")
        finally:
            await raw.aclose()
        assert 0 < ttl <= 60  # the first increment set the expiry
        assert await a.count("n") == 3 and await b.count("m") == 50
        assert await a.count("absent") == 0


async def test_dead_redis_answers_from_memory_quickly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.cache")
    async with caches(DEAD_URL) as (cache,):
        started = time.monotonic()
        await cache.set("k", b"v", 60)
        assert await cache.get("k") == b"v"
        assert [await cache.incr("n", 60) for _ in range(3)] == [1, 2, 3]
        await cache.delete("k")
        assert await cache.get("k") is None
        assert time.monotonic() - started < 1.5
        assert cache.degraded
        assert not await cache.ping()
    warnings = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(warnings) == 1


async def test_hung_redis_costs_at_most_the_timeout() -> None:
    """A server that accepts and never answers (SIGSTOP-like): bounded, then memory."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with caches(f"redis://127.0.0.1:{port}/0", cooldown_seconds=30) as (cache,):
            started = time.monotonic()
            assert await cache.get("k") is None
            first = time.monotonic() - started
            await cache.set("k", b"v", 60)
            assert await cache.get("k") == b"v"
            rest = time.monotonic() - started - first
        assert first < 1.0
        assert rest < 0.1  # the breaker is open: no more waiting on the hung server
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_recovery_bumps_generation_so_stale_entries_are_not_read(
    redis_test_url: str, namespace: str
) -> None:
    """RELIABILITY F3: cache X, lose Redis, invalidate X, Redis returns: nobody reads old X."""
    parts = urlsplit(redis_test_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    options = {"namespace": namespace, "cooldown_seconds": 0.2}
    async with caches(via_port(redis_test_url, proxy.port), redis_test_url, **options) as (
        flaky,
        steady,
    ):
        await flaky.set("acct:1:key:abc", b"active", 60)
        assert await steady.get("acct:1:key:abc") == b"active"

        await proxy.stop()
        await flaky.delete("acct:1:key:abc")  # the revocation cannot reach Redis
        assert flaky.degraded
        assert await steady.get("acct:1:key:abc") == b"active"  # stale, while down

        await proxy.start()
        await asyncio.sleep(0.25)
        assert await flaky.get("acct:1:key:abc") is None  # recovered; generation bumped
        assert not flaky.degraded
        assert await steady.get("acct:1:key:abc") is None  # the other process sees it too
        await steady.set("acct:1:key:abc", b"fresh", 60)
        assert await flaky.get("acct:1:key:abc") == b"fresh"
    await proxy.stop()


async def test_two_limiters_on_one_redis_share_the_count(
    redis_test_url: str, namespace: str
) -> None:
    async with caches(redis_test_url, redis_test_url, namespace=namespace) as (a, b):
        first = RateLimiter(a, limit=3, period_seconds=60)
        second = RateLimiter(b, limit=3, period_seconds=60)
        now = 1_700_000_020.0
        decisions = [
            await first.hit("usr_1", now=now),
            await second.hit("usr_1", now=now + 1),
            await first.hit("usr_1", now=now + 2),
            await second.hit("usr_1", now=now + 3),
        ]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert decisions[3].retry_after >= 1
        assert (await first.hit("usr_2", now=now + 3)).allowed


async def test_limiter_on_dead_redis_still_limits_per_process() -> None:
    async with caches(DEAD_URL) as (cache,):
        limiter = RateLimiter(cache, limit=3, period_seconds=60)
        allowed = [(await limiter.hit("usr_1")).allowed for _ in range(4)]
        assert allowed == [True, True, True, False]
