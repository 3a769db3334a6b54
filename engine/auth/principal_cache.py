"""Verified credentials kept for a few seconds, so a request authenticates without SQL.

An API key or a user's standing (active, role, account status) is read from the database
once and kept in this process for `ttl` seconds (`AE_AUTH_CACHE_SECONDS`, 5 by default).
Any change to a key, a user or an account clears the cache at once in the worker that made
it and, through a Redis pub/sub message, in every other worker within a second. Without
Redis (or while it is down) another worker sees a change within `ttl` at the latest.

The connections come from `engine.redis_client`: with a Redis Cluster the message is a
plain `PUBLISH` (every node relays it to its subscribers), and each worker listens on one
node picked at random, moving to another when that one goes away; behind Sentinel, on the
current master.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from engine.redis_client import RedisClient, connect_url, subscriber

logger = logging.getLogger(__name__)

CHANNEL = "ae:auth:invalidate"
MAX_ENTRIES = 10_000
RECONNECT_SECONDS = 1.0
PUBLISH_TIMEOUT = 0.5
WARM_TIMEOUT = 5.0


class PrincipalCache:
    """A small LRU of verified credential records with expiry and cross-worker invalidation."""

    def __init__(
        self,
        ttl: float,
        redis_url: str | None = None,
        *,
        cluster: bool = False,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.redis_url = redis_url
        self.cluster = cluster
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._listener: asyncio.Task[None] | None = None
        self._publisher: RedisClient | None = None
        self.listening = asyncio.Event()

    def get(self, key: str) -> Any:
        """The record under `key`, or None when absent or older than `ttl`."""
        found = self._entries.get(key)
        if found is None:
            return None
        value, expires = found
        if expires <= self._clock():
            del self._entries[key]
            return None
        return value

    def put(self, key: str, value: Any) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (value, self._clock() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    async def invalidate(self) -> None:
        """Forget everything here, and tell every other worker to do the same."""
        self.clear()
        if self._publisher is None:
            return
        try:
            await asyncio.wait_for(self._publisher.publish(CHANNEL, b"*"), PUBLISH_TIMEOUT)
        except Exception as exc:  # the change is made; other workers catch up within ttl
            logger.warning("could not publish an auth cache invalidation: %s", exc)

    async def start(self) -> None:
        """Listen for invalidations from other workers (when Redis is configured)."""
        if not self.redis_url or self._listener is not None:
            return
        self._publisher = connect_url(
            self.redis_url,
            cluster=self.cluster,
            socket_connect_timeout=PUBLISH_TIMEOUT,
            socket_timeout=PUBLISH_TIMEOUT,
        )
        self._listener = asyncio.create_task(self._listen(), name="aether-auth-invalidations")

    async def _listen(self) -> None:
        assert self.redis_url is not None
        while True:
            client = None
            try:
                client = await subscriber(
                    self.redis_url, cluster=self.cluster, socket_connect_timeout=PUBLISH_TIMEOUT
                )
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    await self._warm_publisher()
                    # Whatever changed while we were not listening is unknown: start afresh.
                    self.clear()
                    self.listening.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                self.clear()
                logger.warning("auth cache invalidations unavailable: %s", type(exc).__name__)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _warm_publisher(self) -> None:
        """Connect the publisher ahead of the first change: a cluster client maps the slots
        on first use, which on a busy host takes longer than PUBLISH_TIMEOUT allows."""
        if self._publisher is not None:
            with contextlib.suppress(Exception):  # publishing will say so, if it persists
                await asyncio.wait_for(self._publisher.ping(), WARM_TIMEOUT)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher.aclose()
            self._publisher = None
