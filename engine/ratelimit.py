"""Fixed-window rate limiting on a `CacheBackend` counter, and its response headers.

The counter key holds the window's start, so every process sharing Redis counts the same
window; while Redis is down the cache falls back to memory and the limit holds per process.
Headers follow draft-ietf-httpapi-ratelimit-headers (`RateLimit-Policy`, `RateLimit`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

import msgspec

from engine.cache import CacheBackend
from engine.settings import RateLimit, Settings

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

    def _window(self, key: str, now: float | None) -> tuple[str, int]:
        moment = time.time() if now is None else now  # wall clock: shared across processes
        window = math.floor(moment / self.period_seconds)
        reset = max(1, math.ceil((window + 1) * self.period_seconds - moment))
        return f"{KEY_PREFIX}{window}:{key}", reset

    async def hit(self, key: str, now: float | None = None) -> RateDecision:
        """Count one request for `key` and decide whether it may proceed."""
        counter, reset = self._window(key, now)
        # One second past the window end, so a counter never expires while still in use.
        count = await self.cache.incr(counter, self.period_seconds + 1)
        return self._decision(count, reset)

    async def peek(self, key: str, now: float | None = None) -> RateDecision:
        """Whether one more hit for `key` would be allowed, without counting it."""
        counter, reset = self._window(key, now)
        return self._decision(await self.cache.count(counter) + 1, reset)

    async def forget(self, key: str, now: float | None = None) -> None:
        """Drop the count of `key` in the current window."""
        await self.cache.delete(self._window(key, now)[0])

    def _decision(self, count: int, reset: int) -> RateDecision:
        allowed = count <= self.limit
        return RateDecision(
            allowed=allowed,
            limit=self.limit,
            period_seconds=self.period_seconds,
            remaining=max(0, self.limit - count),
            reset_seconds=reset,
            retry_after=0 if allowed else reset,
        )


class LoginLimiter:
    """The stricter limit on failed logins, per account and email and per client address.

    Per account and email, every attempt is counted before the password is checked (so
    parallel guesses cannot outrun the limit) and a successful login clears the count: what
    remains counts failures. Per address, only failures are counted, so many people behind
    one address can still log in. Once either limit is reached, every login for that key,
    right password or not, answers 429 until its window ends.
    """

    def __init__(
        self,
        cache: CacheBackend,
        per_account: RateLimit,
        per_address: RateLimit,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_account = RateLimiter(cache, per_account.limit, per_account.period_seconds)
        self.per_address = RateLimiter(cache, per_address.limit, per_address.period_seconds)
        self.clock = clock

    @classmethod
    def from_settings(cls, cache: CacheBackend, settings: Settings) -> LoginLimiter:
        return cls(cache, settings.login_rate_limit, settings.login_address_rate_limit)

    @staticmethod
    def account_key(account: str, email: str) -> str:
        # Hashed: no address book in Redis keys, and a bounded key length.
        digest = hashlib.sha256(f"{account}\x00{email}".lower().encode()).hexdigest()
        return f"login-acct:{digest[:32]}"

    async def admit(self, account: str, email: str, address: str) -> int:
        """0 when this attempt may check a password, else the seconds to wait."""
        now = self.clock()
        by_address = await self.per_address.peek(f"login-addr:{address}", now)
        if not by_address.allowed:
            return by_address.retry_after
        by_account = await self.per_account.hit(self.account_key(account, email), now)
        return by_account.retry_after

    async def failed(self, address: str) -> None:
        await self.per_address.hit(f"login-addr:{address}", self.clock())

    async def succeeded(self, account: str, email: str) -> None:
        await self.per_account.forget(self.account_key(account, email), self.clock())


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
