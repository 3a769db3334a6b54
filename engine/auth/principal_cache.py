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

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from engine.invalidations import InvalidationChannel

CHANNEL = "ae:auth:invalidate"
MAX_ENTRIES = 10_000


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
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.channel = InvalidationChannel(
            CHANNEL, redis_url, cluster=cluster, on_message=self._on_message, on_reset=self.clear
        )
        self.listening = self.channel.listening

    def _on_message(self, _message: bytes) -> None:
        self.clear()

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
        await self.channel.publish(b"*")  # lost: other workers catch up within ttl

    async def start(self) -> None:
        """Listen for invalidations from other workers (when Redis is configured)."""
        await self.channel.start()

    async def close(self) -> None:
        await self.channel.close()
