"""Who still calls the legacy routes: call counts per account, principal and route.

`create_usage_store(settings)` picks Redis when `AE_REDIS_URL` is set (every worker adds to
the same counts), memory otherwise (per process). The Redis keys carry the `{legacy}` hash
tag, so the two hashes one call updates share a Redis Cluster slot and are written in one
MULTI. Recording never fails a request: while Redis errors or hangs, calls are counted in
memory (for a cool-down, then Redis is tried again) and reads add those counts back in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from engine.cache import DEFAULT_COOLDOWN_SECONDS, DEFAULT_NAMESPACE, DEFAULT_SOCKET_TIMEOUT
from engine.legacy.calls import successor_of
from engine.redis_client import RedisClient, connect_url
from engine.settings import Settings

logger = logging.getLogger(__name__)

#: How long the counts of an account live in Redis after its last legacy call.
RETENTION_SECONDS = 90 * 24 * 3600
OPERATION_TIMEOUT = 0.5


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """One line of `GET /v3/action/legacy-usage`."""

    principal: str
    route: str
    successor: str
    calls: int
    last_called_at: dt.datetime


class UsageStore(Protocol):
    async def record(self, account: str, principal: str, route: str) -> None:
        """Count one call of `route` by `principal` (its log name) in `account`."""

    async def read(self, account: str) -> list[Usage]:
        """Every count of `account`, most calls first."""

    async def close(self) -> None:
        """Release connections."""


def _field(principal: str, route: str) -> str:
    return f"{principal} {route}"  # a principal's log name holds no space


def _usage(field: str, calls: int, last: float) -> Usage:
    principal, _, route = field.partition(" ")
    return Usage(
        principal=principal,
        route=route,
        successor=successor_of(route),
        calls=calls,
        last_called_at=dt.datetime.fromtimestamp(int(last), dt.UTC),
    )


def _ordered(rows: list[Usage]) -> list[Usage]:
    return sorted(rows, key=lambda u: (-u.calls, u.principal, u.route))


class MemoryUsageStore:
    """Counts in this process. Bounded by what can call: authenticated principals times
    route templates (the id of a call is never part of its route)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[str, dict[str, tuple[int, float]]] = {}

    async def record(self, account: str, principal: str, route: str) -> None:
        per_account = self._counts.setdefault(account, {})
        key = _field(principal, route)
        calls, _ = per_account.get(key, (0, 0.0))
        per_account[key] = (calls + 1, self._clock())

    def counts(self, account: str) -> dict[str, tuple[int, float]]:
        return dict(self._counts.get(account, {}))

    async def read(self, account: str) -> list[Usage]:
        return _ordered([_usage(k, c, t) for k, (c, t) in self.counts(account).items()])

    async def close(self) -> None:
        self._counts.clear()


class RedisUsageStore:
    """Counts in two Redis hashes per account, `<ns>{legacy}:calls:<account>` (field
    `"<principal> <route>"` → calls) and `<ns>{legacy}:last:<account>` (→ epoch seconds)."""

    def __init__(
        self,
        url: str,
        *,
        cluster: bool = False,
        namespace: str = DEFAULT_NAMESPACE,
        cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client: RedisClient = connect_url(
            url,
            cluster=cluster,
            socket_timeout=DEFAULT_SOCKET_TIMEOUT,
            socket_connect_timeout=DEFAULT_SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._base = namespace + "{legacy}:"
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._open_until = 0.0
        self.fallback = MemoryUsageStore(clock=clock)

    def keys(self, account: str) -> tuple[str, str]:
        return f"{self._base}calls:{account}", f"{self._base}last:{account}"

    def _available(self) -> bool:
        return time.monotonic() >= self._open_until

    def _trip(self, exc: Exception) -> None:
        if self._available():
            logger.warning(
                "redis unavailable for legacy usage counts (%s); counting in memory for %.0f s",
                type(exc).__name__,
                self.cooldown_seconds,
            )
        self._open_until = time.monotonic() + self.cooldown_seconds

    async def record(self, account: str, principal: str, route: str) -> None:
        if not self._available():
            await self.fallback.record(account, principal, route)
            return
        calls, last = self.keys(account)
        field = _field(principal, route)

        async def write() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hincrby(calls, field, 1)
                pipe.hset(last, field, str(int(self._clock())))
                pipe.expire(calls, RETENTION_SECONDS)
                pipe.expire(last, RETENTION_SECONDS)
                await pipe.execute()

        try:
            await asyncio.wait_for(write(), OPERATION_TIMEOUT)
        except Exception as exc:  # a counter must never fail the call it counts
            self._trip(exc)
            await self.fallback.record(account, principal, route)

    async def read(self, account: str) -> list[Usage]:
        merged = self.fallback.counts(account)
        if self._available():
            calls_key, last_key = self.keys(account)

            async def fetch() -> tuple[dict[str, str], dict[str, str]]:
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.hgetall(calls_key)
                    pipe.hgetall(last_key)
                    calls, last = await pipe.execute()
                return calls, last

            try:
                calls, last = await asyncio.wait_for(fetch(), OPERATION_TIMEOUT)
            except Exception as exc:  # answer from memory: what this process counted
                self._trip(exc)
            else:
                for key, value in calls.items():
                    count, seen = merged.get(key, (0, 0.0))
                    merged[key] = (count + int(value), max(seen, float(last.get(key) or 0)))
        return _ordered([_usage(k, c, t) for k, (c, t) in merged.items()])

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # closing a broken connection must not fail shutdown
            logger.debug("redis close failed", exc_info=True)


def create_usage_store(settings: Settings) -> UsageStore:
    """Redis when `AE_REDIS_URL` is set, else this process's memory."""
    if settings.redis_url:
        return RedisUsageStore(settings.redis_url, cluster=settings.redis_cluster)
    return MemoryUsageStore()
