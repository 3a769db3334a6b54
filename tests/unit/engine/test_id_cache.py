"""`IdCache` on the in-process cache: two levels, counts, bounds, and garbage read as a miss."""

from __future__ import annotations

from engine.cache import MemoryCache
from engine.ids import IdCache, IdEntry


async def test_levels_and_counts() -> None:
    shared = MemoryCache()
    first, second = IdCache(shared), IdCache(shared)  # two workers, one shared store
    entry = IdEntry("event_file", 7, "event", 3)
    assert await first.get(1, "x") is None
    await first.put(1, "x", entry)
    assert await second.get(1, "x") == entry  # from the shared store
    assert await second.get(2, "x") is None  # another account: nothing
    assert first.counts() == {"hits": 0, "misses": 1, "stale": 0}
    assert second.counts() == {"hits": 1, "misses": 1, "stale": 0}
    await first.forget(1, ["x"])
    assert await first.get(1, "x") is None
    second.drop(1, "x")  # what the pub/sub message does in another worker
    assert await second.get(1, "x") is None


async def test_stale_entries_and_garbage_are_misses() -> None:
    shared = MemoryCache()
    cache = IdCache(shared)
    await cache.put(1, "x", IdEntry("file", 1))
    await cache.was_stale(1, "x")
    assert cache.counts()["stale"] == 1
    assert await cache.get(1, "x") is None
    await shared.set("ids:1:y", b"\xffnot msgpack", 60)
    assert await cache.get(1, "y") is None


async def test_the_lru_is_bounded() -> None:
    cache = IdCache(MemoryCache(), max_entries=2)
    for n in range(3):
        cache.remember(1, str(n), IdEntry("event", n))
    assert cache._local(1, "0") is None
    assert cache._local(1, "2") == IdEntry("event", 2)
