"""MemoryCache: expiry, LRU bound, counters; create_cache picks the backend."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.cache import CacheBackend, MemoryCache, RedisCache, create_cache
from engine.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_get_set_delete(clock: Clock) -> None:
    cache = MemoryCache(clock=clock)
    assert await cache.get("a") is None
    await cache.set("a", b"1", 10)
    assert await cache.get("a") == b"1"
    await cache.set("a", b"2", 10)
    assert await cache.get("a") == b"2"
    await cache.delete("a")
    await cache.delete("a")  # absent: no error
    assert await cache.get("a") is None


async def test_ttl_expires(clock: Clock) -> None:
    cache = MemoryCache(clock=clock)
    await cache.set("a", b"x", 5)
    clock.now += 4.9
    assert await cache.get("a") == b"x"
    clock.now += 0.1
    assert await cache.get("a") is None
    assert len(cache) == 0  # the expired entry was dropped, not kept
    await cache.set("b", b"y", 0)
    assert await cache.get("b") is None


async def test_lru_bound_evicts_least_recently_used(clock: Clock) -> None:
    cache = MemoryCache(max_entries=3, clock=clock)
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode(), 60)
    assert await cache.get("a") == b"a"  # a is now the most recent
    await cache.set("d", b"d", 60)
    assert len(cache) == 3
    assert await cache.get("b") is None
    assert [await cache.get(k) for k in ("a", "c", "d")] == [b"a", b"c", b"d"]


async def test_incr_counts_and_keeps_first_expiry(clock: Clock) -> None:
    cache = MemoryCache(clock=clock)
    assert await cache.incr("n", 10) == 1
    clock.now += 6
    assert await cache.incr("n", 10) == 2  # does not push the expiry back
    assert await cache.get("n") == b"2"
    clock.now += 4
    assert await cache.incr("n", 10) == 1  # the first window expired at +10
    await cache.set("v", b"text", 10)
    assert await cache.incr("v", 10) == 1


async def test_concurrent_increments_are_not_lost() -> None:
    cache = MemoryCache()
    counts = await asyncio.gather(*(cache.incr("n", 60) for _ in range(200)))
    assert sorted(counts) == list(range(1, 201))


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.binary(max_size=8)), max_size=40))
async def test_matches_a_dict_model_without_expiry(ops: list[tuple[str, bytes]]) -> None:
    cache = MemoryCache(max_entries=100)
    model: dict[str, bytes] = {}
    for key, value in ops:
        await cache.set(key, value, 3600)
        model[key] = value
    for key in "abcdef":
        assert await cache.get(key) == model.get(key)


def test_rejects_a_zero_bound() -> None:
    with pytest.raises(ValueError):
        MemoryCache(max_entries=0)


async def test_create_cache_picks_the_backend() -> None:
    memory = create_cache(Settings())
    assert isinstance(memory, MemoryCache)
    redis_cache = create_cache(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(redis_cache, RedisCache)
    for cache in (memory, redis_cache):
        backend: CacheBackend = cache
        await backend.close()
