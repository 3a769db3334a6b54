"""The id-resolution cache: an LRU per worker over the shared cache, with invalidations."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import msgspec

from engine.cache import CacheBackend
from engine.invalidations import InvalidationChannel

logger = logging.getLogger(__name__)

CHANNEL = "ae:ids:invalidate"
MAX_ENTRIES = 10_000
#: How long an entry lives in this worker and in the shared cache. An id never changes type
#: or key; only a delete or a move to another parent ends an entry early.
LOCAL_SECONDS = 300.0
SHARED_SECONDS = 3600.0


class IdEntry(msgspec.Struct, frozen=True, array_like=True):
    """What a public id names inside one account."""

    type: str
    key: int
    parent_type: str | None = None
    parent_key: int | None = None


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(IdEntry)


class IdCache:
    """LRU (this worker) → shared cache (every worker); counts hits, misses and stale entries."""

    def __init__(
        self,
        shared: CacheBackend,
        redis_url: str | None = None,
        *,
        cluster: bool = False,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[int, str], tuple[IdEntry, float]] = OrderedDict()
        self.channel = InvalidationChannel(
            CHANNEL,
            redis_url,
            cluster=cluster,
            on_message=self._apply,
            on_reset=self._entries.clear,
        )
        self.listening = self.channel.listening
        self.hits = 0
        self.misses = 0
        self.stale = 0

    @staticmethod
    def _shared_key(account: int, public_id: str) -> str:
        return f"ids:{account}:{public_id}"

    def counts(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "stale": self.stale}

    def _local(self, account: int, public_id: str) -> IdEntry | None:
        found = self._entries.get((account, public_id))
        if found is None:
            return None
        entry, expires = found
        if expires <= self._clock():
            del self._entries[(account, public_id)]
            return None
        return entry

    def remember(self, account: int, public_id: str, entry: IdEntry) -> None:
        """Keep `entry` in this worker only (no I/O: for the read paths)."""
        self._entries[(account, public_id)] = (entry, self._clock() + LOCAL_SECONDS)
        self._entries.move_to_end((account, public_id))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get(self, account: int, public_id: str) -> IdEntry | None:
        """The entry for `public_id` in `account`: this worker's, else the shared one."""
        entry = self._local(account, public_id)
        if entry is None:
            raw = await self.shared.get(self._shared_key(account, public_id))
            if raw is not None:
                try:
                    entry = _DECODER.decode(raw)
                except msgspec.DecodeError:  # not ours or from another version: a miss
                    entry = None
            if entry is not None:
                self.remember(account, public_id, entry)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    async def put(self, account: int, public_id: str, entry: IdEntry) -> None:
        """Keep `entry` here and in the shared cache."""
        self.remember(account, public_id, entry)
        await self.shared.set(
            self._shared_key(account, public_id), _ENCODER.encode(entry), SHARED_SECONDS
        )

    def drop(self, account: int, public_id: str) -> None:
        self._entries.pop((account, public_id), None)

    async def was_stale(self, account: int, public_id: str) -> None:
        """An entry that led to nothing: forget it here and in the shared cache."""
        self.stale += 1
        self.drop(account, public_id)
        await self.shared.delete(self._shared_key(account, public_id))

    async def forget(self, account: int, public_ids: Iterable[str]) -> None:
        """Objects deleted or moved: forget them here, in the shared cache, in every worker."""
        ids = list(public_ids)
        for public_id in ids:
            self.drop(account, public_id)
            await self.shared.delete(self._shared_key(account, public_id))
        if ids:  # a lost message costs a stale entry: a miss, never a wrong answer
            await self.channel.publish(",".join(f"{account}:{pid}" for pid in ids).encode())

    def _apply(self, message: bytes) -> None:
        for part in message.decode("utf-8", "replace").split(","):
            account, _, public_id = part.partition(":")
            if account.isdigit():
                self.drop(int(account), public_id)

    async def start(self) -> None:
        """Listen for other workers' invalidations (when Redis is configured)."""
        await self.channel.start()

    async def close(self) -> None:
        logger.info(
            "id cache: %d hits, %d misses, %d stale",
            self.hits,
            self.misses,
            self.stale,
            extra={"id_cache": self.counts()},
        )
        await self.channel.close()
        self._entries.clear()
