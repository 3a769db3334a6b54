"""One client connection (WebSocket or SSE): its subscriptions and its bounded outbox.

A `Session` listens to its account's feed. Each entry is offered to every subscription:
a change of the subscription's object type whose state matches its filter (the new state
for a create or an update, the last one for a delete) becomes a `change` message; a gap
ends the subscription with a `resync-required` error. Messages wait in the outbox until the
transport sends them; more than `MAX_BACKLOG` waiting marks the session as overflowed and
the transport disconnects it (WebSocket close 1008), so a slow consumer costs bounded
memory. A subscription starts pending: entries arriving while its start point is looked up
(or its backlog replayed) are kept and offered once it is known, so none is lost or doubled.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import msgspec

from engine.errors import AetherError, ForbiddenError, ValidationError
from engine.principal import Principal
from engine.realtime.feed import (
    Entry,
    Feed,
    FeedUnavailableError,
    ResyncRequiredError,
    Seq,
    format_seq,
)
from engine.realtime.predicate import Predicate, compile_predicate, parse_subscription_filter
from engine.requestctx import current_request_id
from registry.descriptors import ObjectType, Registry

MAX_BACKLOG = 1_000
MAX_SUBSCRIPTIONS = 100
MAX_VERSIONS = 10_000  # objects whose last version a session remembers


class ChangeMessage(msgspec.Struct, kw_only=True):
    type: str
    subscription: str | None
    op: str
    object: str
    id: str
    data: msgspec.Raw | None
    version: int
    seq: str


_ENCODER = msgspec.json.Encoder()


def encode_message(message: Any) -> bytes:
    return _ENCODER.encode(message)


def problem_of(exc: AetherError, instance: str) -> dict[str, Any]:
    """The RFC 9457 fields of `exc`, as an HTTP answer would carry them."""
    problem: dict[str, Any] = {
        "type": exc.type,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "instance": instance,
        "request_id": current_request_id(),
    }
    if exc.errors:
        problem["errors"] = list(exc.errors)
    return problem


def error_message(exc: AetherError, subscription: str | None, instance: str) -> bytes:
    return encode_message(
        {"type": "error", "subscription": subscription, "problem": problem_of(exc, instance)}
    )


class Subscription:
    def __init__(self, sid: str | None, obj: ObjectType, predicate: Predicate) -> None:
        self.id = sid
        self.obj = obj
        self.predicate = predicate
        self.after: Seq | None = None  # None: pending, entries are kept in `waiting`
        self.waiting: list[Entry] = []


class Session:
    """Subscriptions of one connection to one account's feed (see the module docstring)."""

    def __init__(
        self,
        feed: Feed,
        registry: Registry,
        principal: Principal,
        dialect: str,
        instance: str,
        *,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        if principal.account_public_id is None:
            raise ForbiddenError("A system key belongs to no account and has no changes to follow")
        self.feed = feed
        self.registry = registry
        self.principal = principal
        self.account: str = principal.account_public_id
        self.dialect = dialect
        self.instance = instance
        self.max_backlog = max_backlog
        self.outbox: collections.deque[tuple[Seq | None, bytes]] = collections.deque()
        self.wake = asyncio.Event()
        self.overflow = asyncio.Event()  # set once: the transport must end the connection
        self.subscriptions: dict[str | None, Subscription] = {}
        self._listening = False
        #: The highest version seen per object: two workers writing one object may append
        #: their changes in the other order than they committed; the older one is dropped.
        self._versions: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()

    # -- subscribing ----------------------------------------------------------------------

    def check(self, sid: str | None, object_name: object, raw_filter: object) -> Subscription:
        """A new subscription checked against the registry and the principal's role."""
        if sid in self.subscriptions:
            raise ValidationError.single("id", "a subscription with this id exists")
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise ValidationError.single("id", f"at most {MAX_SUBSCRIPTIONS} subscriptions")
        obj = self.registry.get(object_name) if isinstance(object_name, str) else None
        if obj is None:
            raise ValidationError.single("object", "unknown object type")
        if not self.principal.has_role(obj.permissions.read_role):
            raise ForbiddenError(f"The role {self.principal.role!r} cannot read {obj.name!r}")
        raw = {} if raw_filter is None else raw_filter
        node = parse_subscription_filter(raw, obj, self.registry, role=self.principal.role)
        return Subscription(sid, obj, compile_predicate(node, self.dialect))

    async def subscribe(self, sub: Subscription, since: Seq | None) -> None:
        """Start `sub` after `since` (replaying what followed it), or from now.

        Queues `subscribed` before any change of it; raises `ResyncRequiredError` (410) when
        `since` is no longer covered, leaving no subscription behind.
        """
        self.subscriptions[sub.id] = sub
        try:
            if not self._listening:
                await self.feed.listen(self.account, self)
                self._listening = True
            if since is None:
                after, backlog = await self._start(), []
            else:
                after, backlog = since, await self.feed.replay(self.account, since)
        except BaseException:
            self.subscriptions.pop(sub.id, None)
            raise
        self.push(None, encode_message({"type": "subscribed", "id": sub.id}))
        sub.after = after
        waiting, sub.waiting = sub.waiting, []
        for entry in (*backlog, *waiting):
            if sub.id not in self.subscriptions:
                break
            self._offer(sub, entry)

    async def _start(self) -> Seq:
        """Where a new subscription starts: now. While the feed cannot say where now is
        (Redis down), from the start of what the feed delivers next; the changes lost
        meanwhile reach it as a gap (resync-required) once Redis answers again."""
        try:
            return await self.feed.position(self.account)
        except FeedUnavailableError:
            return (0, 0)

    def unsubscribe(self, sid: str | None) -> bool:
        return self.subscriptions.pop(sid, None) is not None

    def close(self) -> None:
        if self._listening:
            self.feed.unlisten(self.account, self)
            self._listening = False
        self.subscriptions.clear()

    # -- delivering -----------------------------------------------------------------------

    def deliver(self, entry: Entry) -> None:
        for sub in list(self.subscriptions.values()):
            if sub.after is None:
                sub.waiting.append(entry)
                if len(sub.waiting) > self.max_backlog:
                    self._overflow()
            else:
                self._offer(sub, entry)

    def _offer(self, sub: Subscription, entry: Entry) -> None:
        if entry.change is None:
            self.subscriptions.pop(sub.id, None)
            gap = ResyncRequiredError("Changes were lost; reload and subscribe again")
            self.push(None, error_message(gap, sub.id, self.instance))
            return
        assert sub.after is not None
        if entry.seq <= sub.after:
            return
        sub.after = entry.seq
        change = entry.change
        if change.object != sub.obj.name or self._is_stale(
            change.object, change.id, change.version
        ):
            return
        if not sub.predicate(entry.state):
            return
        message = ChangeMessage(
            type="change",
            subscription=sub.id,
            op=change.op,
            object=change.object,
            id=change.id,
            data=None if change.op == "delete" else change.state,
            version=change.version,
            seq=format_seq(entry.seq),
        )
        self.push(entry.seq, encode_message(message))

    def _is_stale(self, name: str, public_id: str, version: int) -> bool:
        key = (name, public_id)
        seen = self._versions.get(key)
        if seen is not None and version < seen:
            return True
        self._versions[key] = version
        self._versions.move_to_end(key)
        if len(self._versions) > MAX_VERSIONS:
            self._versions.popitem(last=False)
        return False

    def push(self, seq: Seq | None, message: bytes) -> None:
        if self.overflowed:
            return
        self.outbox.append((seq, message))
        if len(self.outbox) > self.max_backlog:
            self._overflow()
        self.wake.set()

    @property
    def overflowed(self) -> bool:
        return self.overflow.is_set()

    def _overflow(self) -> None:
        self.overflow.set()
        self.outbox.clear()  # the connection is ending: free what it would have sent
        for sub in self.subscriptions.values():
            sub.waiting.clear()
        self.wake.set()

    async def next_message(self, wait: float) -> tuple[Seq | None, bytes] | None:
        """The next message to send, waiting at most `wait` seconds (None: nothing)."""
        if not self.outbox and not self.overflowed:
            self.wake.clear()
            try:
                async with asyncio.timeout(wait):  # no task per wait, unlike wait_for
                    await self.wake.wait()
            except TimeoutError:
                return None
        if self.overflowed or not self.outbox:
            return None
        return self.outbox.popleft()
