"""The change feed in Redis: one stream per account, shared by every worker.

Keys carry the account in a hash tag (`ae:{acct:<public id>}:feed`), so each stream lives
on one cluster slot and every command here names one key. `XADD ... MAXLEN ~ RETENTION`
keeps at least the last 10,000 changes; the stream's own entry ids are the `seq`s, and
`XINFO STREAM` (first entry, entries-added, last-generated-id) tells whether a resume point
is still covered (trimming, unlike XDEL, leaves max-deleted-entry-id alone, so the oldest
entry kept is the floor once `entries-added` exceeds the length). Each worker runs one
reader per account that has listeners in it (a blocking `XREAD`), so a change costs one
Redis read per worker, whatever the number of subscribers.

While Redis is down writes go on: a change that cannot be appended is lost, so its
account is remembered and, as soon as Redis answers again, a gap entry is appended, which
tells every listener in every worker to resync. A reader that loses Redis resumes from its
last entry when Redis returns, or tells its listeners to resync when the stream no longer
covers it (Redis restarted empty, or trimmed past it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError, ResponseError

from engine.realtime.changes import Change
from engine.realtime.feed import (
    RETENTION,
    Entry,
    FeedUnavailableError,
    Listener,
    ResyncRequiredError,
    Seq,
    encode_change,
    format_seq,
    parse_seq,
)
from engine.redis_client import RedisClient, connect_url

logger = logging.getLogger(__name__)

TIMEOUT = 1.0  # seconds a publish or a lookup may wait for Redis
BLOCK_MS = 5_000  # how long one XREAD waits for new entries
RETRY_SECONDS = 0.5
READ_COUNT = 1_000
_GAP = b"gap"
_CHANGE = b"c"
_ZERO: Seq = (0, 0)


def stream_key(account: str) -> str:
    return f"ae:{{acct:{account}}}:feed"


def _seq(entry_id: Any) -> Seq:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return parse_seq(text)


def _entry(entry_id: Any, fields: Any) -> Entry:
    return Entry.decode(_seq(entry_id), (fields or {}).get(_CHANGE))


class _Reader:
    """The live entries of one account, read once per worker and handed to its listeners."""

    def __init__(self, feed: RedisFeed, account: str, start: Seq | None) -> None:
        self.feed = feed
        self.account = account
        self.cursor = start  # None: unknown (Redis was down when the first listener came)
        self.listeners: set[Listener] = set()
        self.task: asyncio.Task[None] | None = None

    def add(self, listener: Listener) -> None:
        self.listeners.add(listener)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name=f"aether-feed-{self.account}")

    def _deliver(self, entry: Entry) -> None:
        for listener in list(self.listeners):
            try:
                listener.deliver(entry)
            except Exception:  # one broken listener must not stop the others
                logger.exception("a change feed listener failed")

    def _gap(self) -> None:
        self._deliver(Entry(self.cursor or _ZERO, None))

    async def _run(self) -> None:
        client = self.feed.reader_client
        key = stream_key(self.account)
        lost = False
        while self.listeners:
            try:
                if lost or self.cursor is None:
                    await self._recover()
                    lost = False
                assert self.cursor is not None
                found = await client.xread(
                    {key: format_seq(self.cursor)}, count=READ_COUNT, block=BLOCK_MS
                )
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, FeedUnavailableError) as exc:
                if not lost:
                    logger.warning("change feed reader lost Redis: %s", type(exc).__name__)
                lost = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            streams: Any = found or ()
            for _key, entries in streams:
                for entry_id, fields in entries:
                    entry = _entry(entry_id, fields)
                    self.cursor = entry.seq
                    self._deliver(entry)

    async def _recover(self) -> None:
        """Resume where this reader stopped, or tell the listeners to resync."""
        info = await self.feed.stream_info(self.account)
        if self.cursor is None or not _covers(info, self.cursor):
            self._gap()
            self.cursor = info[1]
            return
        logger.info("change feed reader resumed")


def _covers(info: tuple[Seq, Seq], since: Seq) -> bool:
    floor, last = info
    return floor <= since <= last


def _floor(info: Mapping[str, Any], last: Seq) -> Seq:
    """Nothing trimmed yet: zero. Else the oldest entry kept (or the last, when none is):
    a resume point before it may have missed trimmed entries (conservatively, one just
    before it too)."""
    length, added = info.get("length"), info.get("entries-added")
    if added is not None and length == added:
        return _ZERO
    first = info.get("first-entry")
    if not first:
        return last
    return _seq(first[0])


class RedisFeed:
    """`Feed` over Redis streams (see the module docstring)."""

    def __init__(self, url: str, retention: int = RETENTION, *, cluster: bool = False) -> None:
        self.retention = retention
        self.client: RedisClient = connect_url(
            url, cluster=cluster, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT
        )
        self.reader_client: RedisClient = connect_url(
            url,
            cluster=cluster,
            socket_connect_timeout=TIMEOUT,
            socket_timeout=BLOCK_MS / 1000 + TIMEOUT,
        )
        self._readers: dict[str, _Reader] = {}
        self._lost: set[str] = set()
        self._repair: asyncio.Task[None] | None = None
        self._down_until = 0.0  # until then, publishing skips Redis (it just failed)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        tasks = [r.task for r in self._readers.values() if r.task is not None]
        if self._repair is not None:
            tasks.append(self._repair)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._readers.clear()
        for client in (self.client, self.reader_client):
            with contextlib.suppress(Exception):
                await client.aclose()

    async def publish(self, changes: Sequence[Change]) -> None:
        if time.monotonic() < self._down_until:  # just failed: don't make writes wait
            for account in {c.account for c in changes}:
                self._lose(account)
            return
        try:
            async with asyncio.timeout(TIMEOUT):
                pipe = self.client.pipeline(transaction=False)
                for change in changes:
                    pipe.xadd(
                        stream_key(change.account),
                        {_CHANGE: encode_change(change)},
                        maxlen=self.retention,
                        approximate=True,
                    )
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning(
                "could not append %d change(s) to the feed (%s); subscribers will resync",
                len(changes),
                type(exc).__name__,
            )
            self._down_until = time.monotonic() + RETRY_SECONDS
            for account in {c.account for c in changes}:
                self._lose(account)

    def _lose(self, account: str) -> None:
        self._lost.add(account)
        reader = self._readers.get(account)
        if reader is not None:  # listeners here learn it at once; elsewhere, from the gap
            reader._gap()
        if self._repair is None or self._repair.done():
            self._repair = asyncio.create_task(self._mark_gaps(), name="aether-feed-gaps")

    async def _mark_gaps(self) -> None:
        while self._lost:
            account = next(iter(self._lost))
            try:
                async with asyncio.timeout(TIMEOUT):
                    await self.client.xadd(
                        stream_key(account), {_GAP: b"1"}, maxlen=self.retention, approximate=True
                    )
                self._lost.discard(account)
            except (RedisError, OSError, TimeoutError):
                await asyncio.sleep(RETRY_SECONDS)

    async def stream_info(self, account: str) -> tuple[Seq, Seq]:
        """(floor, last id) of the account's stream (zeros when absent): a resume point at
        or after the floor misses nothing the stream still holds."""
        try:
            async with asyncio.timeout(TIMEOUT):
                info = await self.client.xinfo_stream(stream_key(account))
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return _ZERO, _ZERO
            raise FeedUnavailableError(str(exc)) from exc
        except (RedisError, OSError, TimeoutError) as exc:
            raise FeedUnavailableError(type(exc).__name__) from exc
        last = _seq(info.get("last-generated-id") or b"0-0")
        return _floor(info, last), last

    async def position(self, account: str) -> Seq:
        return (await self.stream_info(account))[1]

    async def replay(self, account: str, since: Seq) -> list[Entry]:
        info = await self.stream_info(account)
        if not _covers(info, since):
            raise ResyncRequiredError(
                "That resume point is no longer kept; reload and subscribe again"
            )
        try:
            async with asyncio.timeout(TIMEOUT * 5):
                found = await self.client.xrange(
                    stream_key(account), min="(" + format_seq(since), count=self.retention + 1
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise FeedUnavailableError(type(exc).__name__) from exc
        rows: Any = found or ()
        entries = [_entry(entry_id, fields) for entry_id, fields in rows]
        if any(e.change is None for e in entries):
            raise ResyncRequiredError("Changes were lost after that resume point; reload")
        return entries

    async def listen(self, account: str, listener: Listener) -> None:
        reader = self._readers.get(account)
        if reader is None:
            try:
                start: Seq | None = await self.position(account)
            except FeedUnavailableError:
                start = None
            reader = _Reader(self, account, start)
            reader = self._readers.setdefault(account, reader)
        reader.add(listener)

    def unlisten(self, account: str, listener: Listener) -> None:
        reader = self._readers.get(account)
        if reader is None:
            return
        reader.listeners.discard(listener)
        if not reader.listeners:
            if reader.task is not None:
                reader.task.cancel()
            del self._readers[account]
