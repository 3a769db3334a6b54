"""Sessions over the in-process feed: ordering, pending subscriptions, gaps, backlog limit."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

import models  # noqa: F401  # registers every model
from engine.errors import ForbiddenError, ValidationError
from engine.principal import Principal
from engine.realtime.changes import Change
from engine.realtime.feed import (
    Entry,
    FeedUnavailableError,
    MemoryFeed,
    ResyncRequiredError,
    format_seq,
    parse_seq,
)
from engine.realtime.session import Session
from models.base import Base
from registry import introspect

REG = introspect(Base)
ACCOUNT = "A" * 22


def principal(role: str = "viewer", account: str | None = ACCOUNT) -> Principal:
    return Principal(
        kind="api_key", subject="k" * 22, account_id=1 if account else None,
        account_public_id=account, role=role,
    )  # fmt: skip


def change(n: int, op: str = "create", name: str = "Gala", obj: str = "event") -> Change:
    state = {"id": f"id{n}", "name": name, "version": 1, "status": "open"}
    return Change(account=ACCOUNT, object=obj, op=op, id=f"id{n}", version=1, state=state)  # type: ignore[arg-type]


def drain(session: Session) -> list[dict[str, Any]]:
    out = [json.loads(message) for _, message in session.outbox]
    session.outbox.clear()
    return out


def make(feed: MemoryFeed, role: str = "viewer", backlog: int = 1000) -> Session:
    return Session(feed, REG, principal(role), "sqlite", "/v3/realtime", max_backlog=backlog)


async def test_filtered_changes_follow_subscribed_in_order() -> None:
    feed = MemoryFeed()
    session = make(feed)
    sub = session.check("s1", "event", {"name": {"_startswith": "G"}})
    await session.subscribe(sub, None)
    await feed.publish([change(1), change(2, name="Board"), change(3, "update")])
    await feed.publish([change(4, "delete"), change(5, obj="event_session")])
    messages = drain(session)
    assert messages[0] == {"type": "subscribed", "id": "s1"}
    assert [(m["op"], m["id"]) for m in messages[1:]] == [
        ("create", "id1"), ("update", "id3"), ("delete", "id4"),
    ]  # fmt: skip
    assert messages[-1]["data"] is None and messages[1]["data"]["name"] == "Gala"
    seqs = [parse_seq(m["seq"]) for m in messages[1:]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


async def test_since_replays_exactly_what_followed_and_old_points_are_refused() -> None:
    feed = MemoryFeed(retention=5)
    await feed.position(ACCOUNT)  # a client learnt where the feed was (the log starts)
    await feed.publish([change(i) for i in range(3)])
    first = format_seq(feed._logs[ACCOUNT].entries[0].seq)
    session = make(feed)
    await session.subscribe(session.check("s", "event", None), parse_seq(first))
    assert [m.get("id") for m in drain(session)] == ["s", "id1", "id2"]
    await feed.publish([change(i) for i in range(3, 10)])  # trims past `first`
    late = make(feed)
    with pytest.raises(ResyncRequiredError):
        await late.subscribe(late.check("s", "event", None), parse_seq(first))
    assert late.subscriptions == {}
    with pytest.raises(ResyncRequiredError):  # a point never published (another process's)
        await late.subscribe(late.check("s", "event", None), (2**60, 0))


async def test_entries_arriving_while_a_subscription_starts_are_kept_once() -> None:
    feed = MemoryFeed()
    session = make(feed)
    sub = session.check("s", "event", None)
    start = await feed.position(ACCOUNT)
    await feed.listen(ACCOUNT, session)
    session._listening = True
    session.subscriptions["s"] = sub  # pending: its start point is being looked up
    await feed.publish([change(1)])
    assert not session.outbox and len(sub.waiting) == 1
    del session.subscriptions["s"]
    await session.subscribe(sub, start)  # replays id1, which also waited: sent once
    assert [m.get("id") for m in drain(session)] == ["s", "id1"]


async def test_a_gap_ends_the_subscription_with_resync_required() -> None:
    feed = MemoryFeed()
    session = make(feed)
    await session.subscribe(session.check("s", "event", None), None)
    drain(session)
    session.deliver(Entry((1, 0), None))
    (error,) = drain(session)
    assert error["type"] == "error" and error["subscription"] == "s"
    assert error["problem"]["status"] == 410
    assert error["problem"]["type"].endswith("resync-required")
    assert session.subscriptions == {}


async def test_an_account_nobody_follows_keeps_no_log() -> None:
    feed = MemoryFeed()
    await feed.publish([change(i) for i in range(3)])
    assert feed._logs == {}
    start = await feed.position(ACCOUNT)
    await feed.publish([change(3)])
    assert [e.change.id for e in await feed.replay(ACCOUNT, start) if e.change] == ["id3"]


async def test_a_consumer_too_far_behind_is_cut_off_and_holds_nothing() -> None:
    feed = MemoryFeed()
    session = make(feed, backlog=10)
    await session.subscribe(session.check("s", "event", None), None)
    await feed.publish([change(i) for i in range(9)])  # with `subscribed`: 10 waiting
    assert not session.overflowed
    await feed.publish([change(i) for i in range(10, 2000)])
    assert session.overflowed and len(session.outbox) == 0
    assert await session.next_message(0.01) is None


async def test_refusals() -> None:
    feed = MemoryFeed()
    with pytest.raises(ForbiddenError):
        Session(feed, REG, principal("system", None), "sqlite", "/v3/realtime")
    session = make(feed)
    assert REG["api_key"].permissions.read_role == "admin"
    with pytest.raises(ForbiddenError):  # as a GET would be
        session.check("k", "api_key", None)
    assert make(feed, role="admin").check("k", "api_key", None).obj.name == "api_key"
    for name, raw in [("nope", None), ("event", {"account": {}}), ("event", {"x": 1}),
                      ("event", [1])]:  # fmt: skip
        with pytest.raises(ValidationError):
            session.check("s", name, raw)
    await session.subscribe(session.check("s", "event", None), None)
    with pytest.raises(ValidationError):
        session.check("s", "event", None)


async def test_a_change_published_after_a_newer_one_of_its_object_is_dropped() -> None:
    feed = MemoryFeed()
    session = make(feed)
    await session.subscribe(session.check("s", "event", None), None)
    v2, v3 = (msgspec.structs.replace(change(1, "update"), version=v) for v in (2, 3))
    gone = msgspec.structs.replace(change(1, "delete"), version=3)
    await feed.publish([v3, v2, gone])  # v2 committed first, but was appended last
    assert [(m.get("op"), m.get("version")) for m in drain(session)[1:]] == [
        ("update", 3), ("delete", 3),
    ]  # fmt: skip


class UnreachableFeed(MemoryFeed):
    """A feed that cannot say where it is now (as a Redis feed while Redis is down)."""

    async def position(self, account: str) -> tuple[int, int]:
        raise FeedUnavailableError("down")


async def test_a_subscription_made_while_the_feed_is_down_starts_and_hears_later() -> None:
    feed = UnreachableFeed()
    session = make(feed)
    await session.subscribe(session.check("s", "event", None), None)
    await feed.publish([change(1)])
    assert [m.get("id") for m in drain(session)] == ["s", "id1"]


def test_seq_round_trips_and_rejects_anything_else() -> None:
    assert format_seq(parse_seq("1733440000000-3")) == "1733440000000-3"
    for bad in ["", "1", "-1", "1-", "a-1", "1-1-1", "\u0661-1", None, 5, "1" * 60 + "-0"]:
        with pytest.raises(ValueError):
            parse_seq(bad)
