"""The change feed: one ordered log per account, resumable by `seq`, with live listeners.

`Feed` is the interface the realtime routes use; `MemoryFeed` keeps the log in this process
(no Redis), `RedisFeed` (engine/realtime/redis_feed.py) in a Redis stream per account shared
by every worker. A `seq` reads `<milliseconds>-<counter>` and increases within an account;
clients treat it as opaque. A resume point older than what is retained, or newer than what
was ever published, is a `ResyncRequiredError` (410): the client must reload and subscribe
afresh. An `Entry` without a change is a gap: changes were lost (Redis was down while they
were published), so every listener of that account must resync too.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from engine.errors import AetherError
from engine.realtime.changes import Change

#: Changes kept per account for resumption (SPEC 6.5: at least the last 10,000).
RETENTION = 10_000

Seq = tuple[int, int]


class ResyncRequiredError(AetherError):
    """The resume point is no longer (or never was) in the feed: reload, then subscribe."""

    status, slug, title = 410, "resync-required", "Resync required"


class FeedUnavailableError(Exception):
    """The feed cannot be reached now (Redis down)."""


def parse_seq(text: object) -> Seq:
    """`"1733440000000-3"` as `(1733440000000, 3)`; ValueError for anything else."""
    if not isinstance(text, str) or len(text) > 41:
        raise ValueError("not a seq")
    ms, sep, n = text.partition("-")
    if not sep or not ms.isdigit() or not n.isdigit() or not ms.isascii() or not n.isascii():
        raise ValueError("not a seq")
    return int(ms), int(n)


def format_seq(seq: Seq) -> str:
    return f"{seq[0]}-{seq[1]}"


class _Encoded(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    object: str
    op: str
    id: str
    version: int
    state: msgspec.Raw


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(_Encoded)


def encode_change(change: Change) -> bytes:
    return _ENCODER.encode(change)


@dataclass(eq=False)
class Entry:
    """One entry of an account's log: a change (decoded once, shared by every listener), or
    a gap (`change` None)."""

    seq: Seq
    change: _Encoded | None
    _state: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def decode(cls, seq: Seq, payload: bytes | None) -> Entry:
        return cls(seq, None if payload is None else _DECODER.decode(payload))

    @property
    def state(self) -> dict[str, Any]:
        """The object's state as JSON decodes it (what subscription filters read)."""
        if self._state is None:
            assert self.change is not None
            self._state = msgspec.json.decode(self.change.state)
        return self._state


class Listener(Protocol):
    def deliver(self, entry: Entry) -> None:
        """Take one entry of the account's log (non-blocking; called in seq order)."""


class Feed(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, changes: Sequence[Change]) -> None:
        """Append committed changes; never raises (a failure becomes a gap)."""

    async def position(self, account: str) -> Seq:
        """The seq of the last entry of `account` (changes after it are new)."""

    async def replay(self, account: str, since: Seq) -> list[Entry]:
        """The entries after `since`; `ResyncRequiredError` when some are no longer known."""

    async def listen(self, account: str, listener: Listener) -> None:
        """Deliver every entry appended from now on to `listener`, in order."""

    def unlisten(self, account: str, listener: Listener) -> None: ...


class _Log:
    def __init__(self, floor: Seq) -> None:
        self.entries: collections.deque[Entry] = collections.deque()
        self.floor = floor  # entries at or before it are not kept
        self.last = floor


class MemoryFeed:
    """The feed of one process: a bounded log per account, delivered as it is appended.

    An account's log starts when a subscriber first asks about it (`position`, `replay` or
    `listen`); changes of accounts nobody follows cost no memory.
    """

    def __init__(self, retention: int = RETENTION) -> None:
        self.retention = retention
        self._boot: Seq = (int(time.time() * 1000), 0)
        self._logs: dict[str, _Log] = {}
        self._listeners: dict[str, set[Listener]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._listeners.clear()

    def _log(self, account: str) -> _Log:
        log = self._logs.get(account)
        if log is None:
            log = self._logs[account] = _Log(self._boot)
        return log

    def _next(self, log: _Log) -> Seq:
        now = int(time.time() * 1000)
        last_ms, last_n = log.last
        return (now, 0) if now > last_ms else (last_ms, last_n + 1)

    async def publish(self, changes: Sequence[Change]) -> None:
        for change in changes:
            # An account nobody has asked about (no position, replay or listener yet) keeps
            # no log: no client can hold a seq of it, so nothing could resume from it.
            log = self._logs.get(change.account)
            if log is None:
                continue
            entry = Entry.decode(self._next(log), encode_change(change))
            log.entries.append(entry)
            log.last = entry.seq
            while len(log.entries) > self.retention:
                log.floor = log.entries.popleft().seq
            for listener in list(self._listeners.get(change.account, ())):
                listener.deliver(entry)

    async def position(self, account: str) -> Seq:
        return self._log(account).last

    async def replay(self, account: str, since: Seq) -> list[Entry]:
        log = self._log(account)
        if since < log.floor or since > log.last:
            raise ResyncRequiredError(
                "That resume point is no longer kept; reload and subscribe again"
            )
        return [e for e in log.entries if e.seq > since]

    async def listen(self, account: str, listener: Listener) -> None:
        self._log(account)
        self._listeners.setdefault(account, set()).add(listener)

    def unlisten(self, account: str, listener: Listener) -> None:
        found = self._listeners.get(account)
        if found is not None:
            found.discard(listener)
            if not found:
                del self._listeners[account]
