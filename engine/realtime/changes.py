"""What a write changed, noted on its connection and published once its transaction commits.

A write path calls `note_change(conn, ...)` for every object it creates, updates or deletes
(a cascade notes each removed descendant). Nothing leaves the process then: the repository's
`transaction()` and `autocommit()` call `publish_noted(conn)` after a clean exit, that is,
after the commit, so a rolled-back write publishes nothing. `publish_noted` hands the
changes to the feed bound to the connection's engine (`bind_feed`) and never raises.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

logger = logging.getLogger(__name__)

Op = Literal["create", "update", "delete"]


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One changed object: `state` is the object as a GET returns it (after a create or an
    update; before a delete, where subscribers receive `data: null`)."""

    account: str  # the owning account's public id
    object: str
    op: Op
    id: str
    version: int
    state: dict[str, Any]


class ChangeSink(Protocol):
    async def publish(self, changes: Sequence[Change]) -> None:
        """Send `changes` (committed, in commit order) to subscribers; never raises."""


_PENDING: weakref.WeakKeyDictionary[AsyncConnection, list[Change]] = weakref.WeakKeyDictionary()
_SINKS: weakref.WeakKeyDictionary[AsyncEngine, ChangeSink] = weakref.WeakKeyDictionary()


def bind_feed(engines: Iterable[AsyncEngine], sink: ChangeSink) -> None:
    """Publish what is noted on connections of `engines` to `sink`."""
    for engine in engines:
        _SINKS[engine] = sink


def unbind_feed(engines: Iterable[AsyncEngine]) -> None:
    for engine in engines:
        _SINKS.pop(engine, None)


def note_change(
    conn: AsyncConnection,
    *,
    account: str | None,
    object: str,
    op: Op,
    state: Mapping[str, Any],
    names: Iterable[str] | None = None,
) -> None:
    """Remember that `object` changed (published after the commit, with the others noted).

    `state` holds at least `id` and `version`; only `names` (the readable fields) are kept.
    A change outside any account (a system listing) is not published.
    """
    if account is None or conn.engine not in _SINKS:
        return
    kept = dict(state) if names is None else {n: state.get(n) for n in names}
    change = Change(
        account=account,
        object=object,
        op=op,
        id=str(state["id"]),
        version=int(state["version"]),
        state=kept,
    )
    _PENDING.setdefault(conn, []).append(change)


async def publish_noted(conn: AsyncConnection) -> None:
    """Publish the changes noted on `conn` (call once its work has committed)."""
    changes = _PENDING.pop(conn, None)
    if not changes:
        return
    sink = _SINKS.get(conn.engine)
    if sink is None:
        return
    try:
        await sink.publish(changes)
    except Exception:  # a write never fails because its announcement did
        logger.warning("could not publish %d change(s)", len(changes), exc_info=True)


def discard_noted(conn: AsyncConnection) -> None:
    """Forget what was noted on `conn` (its work rolled back)."""
    _PENDING.pop(conn, None)
