"""Fixed-window rate limiting on a `CacheBackend` counter, and its response headers.

The counter key holds the window's start, so every process sharing Redis counts the same
window; while Redis is down the cache falls back to memory and the limit holds per process.
Headers follow draft-ietf-httpapi-ratelimit-headers (`RateLimit-Policy`, `RateLimit`).
"""

from __future__ import annotations

import math
import time

import msgspec

from engine.cache import CacheBackend
from engine.settings import Settings

POLICY_NAME = "default"
KEY_PREFIX = "rl:"


class RateDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The answer for one hit: allowed or not, and what the headers report.

    `reset_seconds` is the time until the window ends (at least 1); `retry_after` is that
    same figure when refused and 0 when allowed.
    """

    allowed: bool
    limit: int
    period_seconds: int
    remaining: int
    reset_seconds: int
    retry_after: int


class RateLimiter:
    """`limit` hits per `period_seconds` per key, counted in fixed windows.

    Keys name the principal (or the address when anonymous); the caller builds them.
    """

    def __init__(self, cache: CacheBackend, limit: int, period_seconds: int) -> None:
        if limit < 1 or period_seconds < 1:
            raise ValueError("limit and period_seconds must be at least 1")
        self.cache = cache
        self.limit = limit
        self.period_seconds = period_seconds

    @classmethod
    def from_settings(cls, cache: CacheBackend, settings: Settings) -> RateLimiter:
        return cls(cache, settings.rate_limit.limit, settings.rate_limit.period_seconds)

    async def hit(self, key: str, now: float | None = None) -> RateDecision:
        """Count one request for `key` and decide whether it may proceed."""
        moment = time.time() if now is None else now  # wall clock: shared across processes
        window = math.floor(moment / self.period_seconds)
        window_end = (window + 1) * self.period_seconds
        # One second past the window end, so a counter never expires while still in use.
        count = await self.cache.incr(f"{KEY_PREFIX}{window}:{key}", self.period_seconds + 1)
        reset = max(1, math.ceil(window_end - moment))
        allowed = count <= self.limit
        return RateDecision(
            allowed=allowed,
            limit=self.limit,
            period_seconds=self.period_seconds,
            remaining=max(0, self.limit - count),
            reset_seconds=reset,
            retry_after=0 if allowed else reset,
        )


def rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    """`RateLimit-Policy` and `RateLimit` (structured fields), plus `Retry-After` if refused.

    >>> d = RateDecision(allowed=False, limit=3, period_seconds=60, remaining=0,
    ...                  reset_seconds=12, retry_after=12)
    >>> rate_limit_headers(d)["RateLimit"]
    '"default";r=0;t=12'
    """
    headers = {
        "RateLimit-Policy": f'"{POLICY_NAME}";q={decision.limit};w={decision.period_seconds}',
        "RateLimit": f'"{POLICY_NAME}";r={decision.remaining};t={decision.reset_seconds}',
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, decision.retry_after))
    return headers
