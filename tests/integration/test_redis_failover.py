"""A `redis+sentinel://` URL follows a failover: the cache and the invalidations carry on
on the promoted replica.

A master, its replica and a sentinel are started for this test alone (own directory, free
loopback ports); `SENTINEL FAILOVER` promotes the replica.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis.asyncio as redis

from engine.auth.principal_cache import PrincipalCache
from engine.cache import RedisCache
from tests.backends import unavailable
from tests.redis_servers import fail_over, missing_binaries, start_sentinel


async def test_the_cache_and_invalidations_follow_a_sentinel_failover(tmp_path: Path) -> None:
    if missing_binaries():
        unavailable("a private Redis sentinel", FileNotFoundError(", ".join(missing_binaries())))
    deployment = await asyncio.to_thread(start_sentinel, tmp_path / "redis", replica=True)
    cache = RedisCache(deployment.url, namespace="failover:", cooldown_seconds=0.2)
    workers = [PrincipalCache(5.0, deployment.url) for _ in range(2)]
    try:
        await cache.set("k", b"before", 60)
        assert await cache.get("k") == b"before" and not cache.degraded
        for worker in workers:
            await worker.start()
        await asyncio.wait_for(asyncio.gather(*(w.listening.wait() for w in workers)), 10)

        promoted = await asyncio.to_thread(fail_over, deployment)

        deadline = time.monotonic() + 15
        while True:  # the first commands may meet the demoted master; then the new one
            await cache.set("k2", b"after", 60)
            if await cache.get("k2") == b"after" and not cache.degraded:
                break
            assert time.monotonic() < deadline, "the cache did not reach the new master"
            await asyncio.sleep(0.1)
        raw = redis.Redis(host="127.0.0.1", port=promoted)
        try:
            stored = await raw.get("failover:c:k2")
        finally:
            await raw.aclose()
        assert stored is not None and stored.endswith(b":after")  # written to the new master
        assert await cache.incr("n", 60) == 1 and await cache.incr("n", 60) == 2

        a, b = workers
        b.put("key:1", {"role": "viewer"})
        deadline = time.monotonic() + 15
        while b.get("key:1") is not None:  # listeners may reconnect once: publish until heard
            await a.invalidate()
            assert time.monotonic() < deadline, "the invalidation did not reach the worker"
            await asyncio.sleep(0.2)
    finally:
        for worker in workers:
            await worker.close()
        await cache.close()
        await asyncio.to_thread(deployment.stop)
