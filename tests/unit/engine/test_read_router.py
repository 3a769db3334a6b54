"""`ReadRouter`: stickiness after a write (here and through the shared cache), replica health."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

from engine.cache import MemoryCache
from engine.replicas import ReadRouter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_writer_reads_the_primary_for_the_sticky_window() -> None:
    primary = create_async_engine("sqlite+aiosqlite://")
    replica = create_async_engine("sqlite+aiosqlite://")
    clock = Clock()
    router = ReadRouter(primary, replica, sticky_seconds=5, retry_seconds=3, clock=clock)
    assert await router.engine_for("api_key:a") is replica
    await router.note_write("api_key:a")
    assert await router.engine_for("api_key:a") is primary
    assert await router.engine_for("api_key:b") is replica  # per principal
    clock.now += 5
    assert await router.engine_for("api_key:a") is replica

    router.replica_failed(RuntimeError("down"))
    assert await router.engine_for("api_key:b") is primary
    clock.now += 3
    assert await router.engine_for("api_key:b") is replica
    assert (router.primary_reads, router.replica_reads) == (2, 4)
    await primary.dispose()
    await replica.dispose()


async def test_stickiness_is_shared_between_workers() -> None:
    primary = create_async_engine("sqlite+aiosqlite://")
    replica = create_async_engine("sqlite+aiosqlite://")
    shared = MemoryCache()
    one = ReadRouter(primary, replica, shared=shared)
    two = ReadRouter(primary, replica, shared=shared)
    await one.note_write("user:u")
    assert await two.engine_for("user:u") is primary
    assert await two.engine_for("user:v") is replica
    await primary.dispose()
    await replica.dispose()
