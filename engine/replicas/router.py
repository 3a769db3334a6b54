"""Which engine a read uses, the per-principal stickiness after a write, the replica's health."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.cache import CacheBackend
from engine.direct import DirectReader
from engine.errors import ServiceUnavailableError
from engine.repository import read
from engine.requestctx import principal_var
from registry.descriptors import ObjectType

if TYPE_CHECKING:
    from engine.principal import Principal
    from engine.runtime import Runtime

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds after a write during which the writer's reads go to the primary. Replication on
#: a healthy replica lags well under a second; a replica further behind than this shows a
#: writer its older state once the window has passed (reads of others may show it any time).
STICKY_SECONDS = 5.0
#: Seconds a replica that failed a read is left alone (reads go to the primary meanwhile).
REPLICA_RETRY_SECONDS = 5.0
MAX_STICKY_ENTRIES = 100_000
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ReadRouter:
    """The primary and the replica engines, and who must read the primary for now.

    Stickiness is kept in this process (a dict, no I/O) and, when `shared` is given (the
    Redis cache), for every worker: a read first looks here, then asks the shared store.
    """

    def __init__(
        self,
        primary: AsyncEngine,
        replica: AsyncEngine,
        *,
        shared: CacheBackend | None = None,
        sticky_seconds: float = STICKY_SECONDS,
        retry_seconds: float = REPLICA_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.direct = DirectReader(replica)  # the replica's hot prebuilt reads
        self.shared = shared
        self.sticky_seconds = sticky_seconds
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._sticky: OrderedDict[str, float] = OrderedDict()
        self._down_until = 0.0
        self.replica_reads = 0
        self.primary_reads = 0

    @staticmethod
    def _key(principal: str) -> str:
        return "sticky:" + principal

    async def note_write(self, principal: str) -> None:
        """`principal` just wrote: its reads go to the primary for `sticky_seconds`."""
        self._sticky[principal] = self._clock() + self.sticky_seconds
        self._sticky.move_to_end(principal)
        while len(self._sticky) > MAX_STICKY_ENTRIES:
            self._sticky.popitem(last=False)
        if self.shared is not None:
            await self.shared.set(self._key(principal), b"1", self.sticky_seconds)

    async def is_sticky(self, principal: str) -> bool:
        until = self._sticky.get(principal)
        if until is not None:
            if self._clock() < until:
                return True
            del self._sticky[principal]
        if self.shared is None:
            return False
        return await self.shared.get(self._key(principal)) is not None

    @property
    def replica_up(self) -> bool:
        return self._clock() >= self._down_until

    def replica_failed(self, exc: BaseException) -> None:
        if self.replica_up:
            logger.warning(
                "read replica unavailable (%s); reading from the primary for %.0f s",
                type(exc.__cause__ or exc).__name__,
                self.retry_seconds,
            )
        self._down_until = self._clock() + self.retry_seconds

    async def engine_for(self, principal: str) -> AsyncEngine:
        """The replica, unless it is down or `principal` wrote within the sticky window."""
        if not self.replica_up or await self.is_sticky(principal):
            self.primary_reads += 1
            return self.primary
        self.replica_reads += 1
        return self.replica


async def read_for(
    rt: Runtime,
    principal: Principal,
    work: Callable[[AsyncConnection], Awaitable[T]],
    obj: ObjectType | None = None,
) -> T:
    """`repository.read` of a read-only request: on the replica when one is configured and
    the caller has not just written, falling back to the primary if the replica fails."""
    router = rt.reads
    if router is None:
        return await read(rt.reader, work, obj)
    engine = await router.engine_for(principal.log_name)
    if engine is router.primary:
        return await read(engine, work, obj)
    try:
        return await read(engine, work, obj)
    except ServiceUnavailableError as exc:
        router.replica_failed(exc)
    return await read(router.primary, work, obj)


async def direct_rows(
    rt: Runtime,
    principal: Principal,
    stmt: sa.Select[Any],
    params: Mapping[str, Any],
    *,
    prebuilt: bool = True,
    encoded: frozenset[int] = frozenset(),
) -> list[tuple[Any, ...]] | None:
    """`DirectReader.rows` of a read-only request on the engine `read_for` would use; None
    (run it the usual way, through `read_for`) whenever the shortcut cannot answer."""
    router = rt.reads
    if router is None or await router.engine_for(principal.log_name) is router.primary:
        return await rt.direct.rows(stmt, params, prebuilt=prebuilt, encoded=encoded)
    try:
        return await router.direct.rows(stmt, params, prebuilt=prebuilt, encoded=encoded)
    except ServiceUnavailableError as exc:
        router.replica_failed(exc)
    return None


class StickyWritesMiddleware:
    """Marks the principal of a successful write before its answer is sent (pure ASGI).

    A search (`POST …/search`) writes nothing and marks nobody.
    """

    def __init__(self, app: ASGIApp, router: ReadRouter) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _WRITE_METHODS
            or scope["path"].endswith("/search")
        ):
            await self.app(scope, receive, send)
            return

        async def send_marking(message: Message) -> None:
            # A refused write (4xx) changed nothing; a failure (5xx) may have been committed.
            if message["type"] == "http.response.start" and not 400 <= message["status"] < 500:
                principal = principal_var.get()
                if principal is not None:
                    await self.router.note_write(principal)
            await send(message)

        await self.app(scope, receive, send_marking)
