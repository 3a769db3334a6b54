"""A Redis pub/sub channel on which workers tell each other to forget cached entries.

Used by the principal cache and the id cache: `publish()` never fails the caller (a lost
message costs a stale entry until its TTL, never a wrong answer), and while the listener is
not subscribed — at start, after Redis went away — `on_reset` is called, since whatever was
said meanwhile is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from engine.redis_client import RedisClient, connect_url, subscriber

logger = logging.getLogger(__name__)
RECONNECT_SECONDS = 1.0
PUBLISH_TIMEOUT = 0.5
WARM_TIMEOUT = 5.0


class InvalidationChannel:
    """One channel: a publisher and a listener task with reconnects."""

    def __init__(
        self,
        channel: str,
        redis_url: str | None,
        *,
        on_message: Callable[[bytes], None],
        on_reset: Callable[[], None],
        cluster: bool = False,
    ) -> None:
        self.channel = channel
        self.redis_url = redis_url
        self.cluster = cluster
        self._on_message = on_message
        self._on_reset = on_reset
        self._listener: asyncio.Task[None] | None = None
        self._publisher: RedisClient | None = None
        self.listening = asyncio.Event()

    async def start(self) -> None:
        """Listen for other workers' messages (when Redis is configured)."""
        if not self.redis_url or self._listener is not None:
            return
        self._publisher = connect_url(
            self.redis_url,
            cluster=self.cluster,
            socket_connect_timeout=PUBLISH_TIMEOUT,
            socket_timeout=PUBLISH_TIMEOUT,
        )
        self._listener = asyncio.create_task(self._listen(), name=f"aether-{self.channel}")

    async def publish(self, message: bytes) -> None:
        if self._publisher is None:
            return
        try:
            await asyncio.wait_for(self._publisher.publish(self.channel, message), PUBLISH_TIMEOUT)
        except Exception as exc:
            logger.warning("could not publish on %s: %s", self.channel, type(exc).__name__)

    async def _listen(self) -> None:
        assert self.redis_url is not None
        while True:
            client = None
            try:
                client = await subscriber(
                    self.redis_url, cluster=self.cluster, socket_connect_timeout=PUBLISH_TIMEOUT
                )
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self._warm_publisher()
                    self._on_reset()  # what was said while we were not listening is unknown
                    self.listening.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                self._on_reset()
                logger.warning("%s unavailable: %s", self.channel, type(exc).__name__)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _warm_publisher(self) -> None:
        """Connect the publisher ahead of the first message: a cluster client maps the slots
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
