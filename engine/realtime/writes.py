"""What the write paths note for the feed: the object written, or every object a delete removes.

Called inside the write's connection, before it commits; `engine.repository` publishes what
was noted once the work has committed (see `changes.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.plans import PK_LABEL, ReadPlan
from engine.realtime.changes import Op, note_change
from engine.runtime import Runtime
from registry.descriptors import ObjectType


def note_write(
    conn: AsyncConnection, plan: ReadPlan, account: str | None, op: Op, item: Mapping[str, Any]
) -> None:
    """Note `item` (as a GET returns it) as created, updated or deleted in `account`."""
    if plan.obj.name == "account":
        account = str(item["id"])
    note_change(conn, account=account, object=plan.obj.name, op=op, state=item, names=plan.names)


async def note_delete(
    conn: AsyncConnection,
    rt: Runtime,
    obj: ObjectType,
    pk: int,
    account_id: int | None,
    account: str | None,
    current: Mapping[str, Any],
) -> None:
    """Note the deletion of `current` and of every row the database will cascade to.

    Reads the descendants (each statement scoped to the account) before the DELETE runs.
    """
    if account is None:
        return
    await _note_descendants(conn, rt, obj, sa.literal(pk), account_id, account, 0)
    note_write(conn, rt.plans[obj.name], account, "delete", current)


async def _note_descendants(
    conn: AsyncConnection,
    rt: Runtime,
    obj: ObjectType,
    keys: sa.ColumnElement[Any] | list[int],
    account_id: int | None,
    account: str,
    depth: int,
) -> None:
    if depth > len(rt.registry):
        return
    for referrer, relation in rt.registry.referrers(obj.name):
        if relation.on_delete != "CASCADE":
            continue
        plan = rt.plans[referrer.name]
        column = plan.table.c[relation.field]
        match = column.in_(keys) if isinstance(keys, list) else column == keys
        stmt = plan.scoped(plan.select(in_account=True).where(match), account_id)
        rows = (await conn.execute(stmt)).mappings().all()
        if not rows:
            continue
        await _note_descendants(
            conn, rt, referrer, [int(r[PK_LABEL]) for r in rows], account_id, account, depth + 1
        )
        for row in rows:
            item = plan.public(list(row.values()), None, account)
            note_write(conn, plan, account, "delete", item)
