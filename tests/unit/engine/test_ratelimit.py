"""Fixed-window rate limiting on the memory cache, and the RateLimit headers."""

from __future__ import annotations

import pytest

from engine.cache import MemoryCache
from engine.ratelimit import LoginLimiter, RateDecision, RateLimiter, rate_limit_headers
from engine.settings import RateLimit, Settings

T0 = 1_700_000_020.0  # 40 s into a minute window (1_699_999_980 is a multiple of 60)


async def test_fourth_hit_is_refused_with_retry_after() -> None:
    limiter = RateLimiter(MemoryCache(), limit=3, period_seconds=60)
    decisions = [await limiter.hit("p:usr_1", now=T0 + i) for i in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[3]
    assert refused.retry_after >= 1
    assert refused.retry_after == refused.reset_seconds == 60 - 43 == 17
    assert decisions[0].retry_after == 0


async def test_keys_are_counted_apart_and_windows_reset() -> None:
    limiter = RateLimiter(MemoryCache(), limit=1, period_seconds=60)
    assert (await limiter.hit("a", now=T0)).allowed
    assert (await limiter.hit("b", now=T0)).allowed
    assert not (await limiter.hit("a", now=T0 + 1)).allowed
    assert (await limiter.hit("a", now=T0 + 20)).allowed  # 1_700_000_040: a new window


async def test_reset_is_at_least_one_second() -> None:
    limiter = RateLimiter(MemoryCache(), limit=1, period_seconds=1)
    decision = await limiter.hit("a", now=5.999)
    assert decision.reset_seconds == 1


def test_headers_when_allowed_and_refused() -> None:
    allowed = RateDecision(
        allowed=True, limit=600, period_seconds=60, remaining=599, reset_seconds=42, retry_after=0
    )
    assert rate_limit_headers(allowed) == {
        "RateLimit-Policy": '"default";q=600;w=60',
        "RateLimit": '"default";r=599;t=42',
    }
    refused = RateDecision(
        allowed=False, limit=3, period_seconds=60, remaining=0, reset_seconds=17, retry_after=17
    )
    headers = rate_limit_headers(refused)
    assert headers["Retry-After"] == "17"
    assert headers["RateLimit"] == '"default";r=0;t=17'


def test_from_settings_and_bad_arguments() -> None:
    limiter = RateLimiter.from_settings(MemoryCache(), Settings(rate_limit=RateLimit(5, 3600)))
    assert (limiter.limit, limiter.period_seconds) == (5, 3600)
    with pytest.raises(ValueError):
        RateLimiter(MemoryCache(), limit=0, period_seconds=60)


async def test_peek_does_not_count_and_forget_clears() -> None:
    cache = MemoryCache()
    limiter = RateLimiter(cache, limit=2, period_seconds=60)
    assert (await limiter.peek("a", now=T0)).allowed
    await limiter.hit("a", now=T0)
    await limiter.hit("a", now=T0)
    assert not (await limiter.peek("a", now=T0)).allowed
    assert (await limiter.peek("a", now=T0 + 20)).allowed  # the next window
    await limiter.forget("a", now=T0)
    assert (await limiter.peek("a", now=T0)).allowed
    assert await cache.count("nothing") == 0


async def test_login_limiter_counts_attempts_per_account_and_failures_per_address() -> None:
    now = [T0]
    login = LoginLimiter(MemoryCache(), RateLimit(2, 60), RateLimit(3, 60), clock=lambda: now[0])
    assert await login.admit("alpha", "Ann@x.test", "10.0.0.1") == 0
    assert await login.admit("ALPHA", "ann@x.test", "10.0.0.1") == 0  # case-blind key
    assert await login.admit("alpha", "ann@x.test", "10.0.0.1") == 20  # third attempt
    await login.succeeded("alpha", "ann@x.test")
    assert await login.admit("alpha", "ann@x.test", "10.0.0.1") == 0
    for _ in range(3):
        await login.failed("10.0.0.2")
    assert await login.admit("beta", "bob@x.test", "10.0.0.2") == 20
    assert await login.admit("beta", "bob@x.test", "10.0.0.3") == 0
    now[0] += 60
    assert await login.admit("beta", "bob@x.test", "10.0.0.2") == 0
