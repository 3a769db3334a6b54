"""The cache and counter store: a `CacheBackend` protocol, in memory or in Redis.

`RedisCache` never raises to its callers: when Redis errors or hangs it answers from a
per-process `MemoryCache` for a cool-down period (SPEC 9), and on recovery it bumps a
generation number so entries written before the outage are no longer read (RELIABILITY F3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from engine.redis_client import RedisClient, connect_url
from engine.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_SOCKET_TIMEOUT = 0.3
DEFAULT_OPERATION_TIMEOUT = 0.5
DEFAULT_COOLDOWN_SECONDS = 5.0
DEFAULT_NAMESPACE = "ae:"
WARM_SECONDS = 5.0  # the first contact at start-up (a cluster client maps its slots then)

# The first increment sets the expiry, atomically with it (one key: cluster-safe).
_INCR_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class CacheBackend(Protocol):
    """An async byte cache with expiring counters.

    Keys are plain strings chosen by the caller, and nothing here scopes them: a caller
    caching tenant data must put the account in the key (`f"id:{account}:{type}:{pid}"`).
    No method raises because the store is unreachable; a miss is always a safe answer.
    """

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent, expired or unreadable."""

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store `value` for `ttl_seconds` (a non-positive ttl deletes the key)."""

    async def delete(self, key: str) -> None:
        """Forget `key` (no error when absent)."""

    async def incr(self, key: str, ttl_seconds: int) -> int:
        """Add one and return the new count; the first increment sets the expiry."""

    async def count(self, key: str) -> int:
        """The current value of an `incr` counter, without changing it (0 when absent)."""

    async def ping(self) -> bool:
        """Whether the shared store answers (always True in memory); for `/readyz`."""

    async def close(self) -> None:
        """Release connections."""


class MemoryCache:
    """A bounded LRU cache with per-entry expiry, for one process.

    Every method runs without awaiting, so each is atomic on the event loop and no lock is
    needed. Past `max_entries` the least recently used entry goes first.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: str) -> tuple[bytes, float] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _store(self, key: str, value: bytes, expires_at: float) -> None:
        self._entries[key] = (value, expires_at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        return None if entry is None else entry[0]

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            self._entries.pop(key, None)
            return
        self._store(key, bytes(value), self._clock() + ttl_seconds)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def incr(self, key: str, ttl_seconds: int) -> int:
        entry = self._live(key)
        count = 1
        expires_at = self._clock() + max(1, ttl_seconds)
        if entry is not None:
            try:
                count = int(entry[0]) + 1
                expires_at = entry[1]
            except ValueError:
                pass  # Redis would refuse; a counter overwriting a value is the kinder answer
        self._store(key, str(count).encode(), expires_at)
        return count

    async def count(self, key: str) -> int:
        entry = self._live(key)
        if entry is None:
            return 0
        try:
            return int(entry[0])
        except ValueError:
            return 0

    def clear(self) -> None:
        self._entries.clear()

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self.clear()


class RedisCache:
    """Redis shared by every worker, with a circuit breaker onto a local `MemoryCache`.

    Short socket timeouts and no client retries bound the cost of a dead or hung Redis to
    about `operation_timeout`. After a failure the breaker stays open `cooldown_seconds`
    (one warning per outage); then a single probe tries Redis again.

    The client comes from `engine.redis_client` (one server, Sentinel or Cluster); every
    command touches one key, so the namespace must hold no hash tag (no braces) and keys
    spread over a cluster's slots.

    Values carry the generation they were written under (`b"<gen>:<value>"`) and are read
    with `GET generation` and `GET key` in one pipelined round trip (one per node in a
    cluster, sent together). A process that saw an outage increments
    the generation when Redis answers again, so every process stops reading entries that
    invalidations made during the outage (which went to memory) could not reach. Counters
    are not generation-tagged: a rate-limit window survives a blip.
    """

    def __init__(
        self,
        url: str,
        *,
        cluster: bool = False,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS,
        namespace: str = DEFAULT_NAMESPACE,
        fallback: MemoryCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if "{" in namespace or "}" in namespace:
            raise ValueError("a cache namespace holds no braces (they would pin it to one slot)")
        self._client: RedisClient = connect_url(
            url,
            cluster=cluster,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),  # the breaker decides; a retry would double the wait
        )
        # Sent by its SHA-1 (EVALSHA), loaded again by redis-py if the server lost it: the
        # script runs for every request (rate limits), its text need not travel each time.
        self._incr_script = self._client.register_script(_INCR_SCRIPT)
        self.operation_timeout = operation_timeout
        self.cooldown_seconds = cooldown_seconds
        self._prefix = namespace + "c:"
        self._generation_key = namespace + "generation"
        self.fallback = fallback if fallback is not None else MemoryCache()
        self._clock = clock
        self._generation = 0
        self._generation_known = False
        self._first_lock = asyncio.Lock()
        self._open_until = 0.0
        self._degraded = False
        self._probing = False

    @property
    def degraded(self) -> bool:
        """True while answers come from the per-process memory fallback."""
        return self._degraded

    async def _call(
        self, operation: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        """Run `operation` on Redis, or `fallback` while the breaker is open or on failure."""
        if self._degraded and (self._clock() < self._open_until or self._probing):
            return await fallback()
        probing = self._degraded
        if probing:
            self._probing = True
        try:
            if probing:
                await asyncio.wait_for(self._recover(), self.operation_timeout)
            elif not self._generation_known:
                await asyncio.wait_for(self._first_contact(), self.operation_timeout)
            result = await asyncio.wait_for(operation(), self.operation_timeout)
        except Exception as exc:  # a cache failure must never become a failed request
            self._trip(exc)
            return await fallback()
        finally:
            if probing:
                self._probing = False
        return result

    def _trip(self, exc: Exception) -> None:
        self._open_until = self._clock() + self.cooldown_seconds
        if not self._degraded:
            self._degraded = True
            logger.warning(
                "redis unavailable (%s); using per-process memory for %.0f s",
                type(exc).__name__,
                self.cooldown_seconds,
            )
        else:
            logger.debug("redis still unavailable (%s)", type(exc).__name__)

    async def warm(self) -> None:
        """Make the first contact now, with more time than a request would get (a cluster
        client maps its slots then). A failure is left for the first request to meet."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._first_contact(), WARM_SECONDS)

    async def _first_contact(self) -> None:
        """Load the generation once, however many requests arrive together: a cluster
        client maps the slots on its first command, and concurrent first commands would
        each remap them, closing the connections the others are using."""
        async with self._first_lock:
            if not self._generation_known:
                await self._load_generation()

    async def _load_generation(self) -> None:
        self._generation = int(await self._client.get(self._generation_key) or 0)
        self._generation_known = True

    async def _recover(self) -> None:
        generation = int(await self._client.incr(self._generation_key))
        self._generation = generation
        self._generation_known = True
        self._degraded = False
        self.fallback.clear()  # its entries would be stale by the next outage
        logger.warning("redis reachable again; cache generation is now %d", generation)

    async def _get(self, key: str) -> bytes | None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(self._generation_key)
            pipe.get(self._prefix + key)
            current, stored = await pipe.execute()
        self._generation = int(current or 0)
        if stored is None:
            return None
        raw = stored.encode() if isinstance(stored, str) else stored
        tag, sep, value = raw.partition(b":")
        if not sep or not tag.isdigit() or int(tag) != self._generation:
            return None
        return value

    async def get(self, key: str) -> bytes | None:
        return await self._call(lambda: self._get(key), lambda: self.fallback.get(key))

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            await self.delete(key)
            return
        payload = b"%d:%s" % (self._generation, value)
        milliseconds = max(1, math.ceil(ttl_seconds * 1000))

        async def operation() -> None:
            await self._client.set(self._prefix + key, payload, px=milliseconds)

        await self._call(operation, lambda: self.fallback.set(key, value, ttl_seconds))

    async def delete(self, key: str) -> None:
        async def operation() -> None:
            await self._client.delete(self._prefix + key)

        await self._call(operation, lambda: self.fallback.delete(key))

    async def incr(self, key: str, ttl_seconds: int) -> int:
        seconds = max(1, math.ceil(ttl_seconds))

        async def operation() -> int:
            count = await self._incr_script(keys=[self._prefix + key], args=[seconds])
            return int(count)

        return await self._call(operation, lambda: self.fallback.incr(key, seconds))

    async def count(self, key: str) -> int:
        async def operation() -> int:
            raw = await self._client.get(self._prefix + key)  # counters carry no generation
            try:
                return int(raw or 0)
            except ValueError:
                return 0

        return await self._call(operation, lambda: self.fallback.count(key))

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._client.ping(), self.operation_timeout))
        except Exception:  # reported, not raised: /readyz shows "degraded"
            return False

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # closing a broken connection must not fail shutdown
            logger.debug("redis close failed", exc_info=True)
        self.fallback.clear()


def create_cache(settings: Settings) -> CacheBackend:
    """Redis when `AE_REDIS_URL` is set, else a per-process memory cache."""
    if settings.redis_url:
        return RedisCache(settings.redis_url, cluster=settings.redis_cluster)
    return MemoryCache()
