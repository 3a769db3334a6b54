"""Every sort an index can serve is served by one: EXPLAIN shows no sort over the tenant.

For each type, its default sort and each sortable field (both directions), the first page
the engine would run, flat and (for the default sort) under its parent, is explained on
MariaDB and PostgreSQL; a filesort (MariaDB) or a Sort node (PostgreSQL) fails the test.
Which sorts are meant to be served is the models' own rule (`index_serves_sort`): text
sorts by code point and NULL-first sorts are the database's to sort, and the README says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from engine.db import create_engine
from engine.plans import ReadPlan, build_plans
from engine.runtime import build_registry
from engine.search import compile_order, default_sort, order_by_clauses
from engine.search.nodes import SortKey
from engine.settings import Settings
from models.base import index_serves_sort
from registry.descriptors import ObjectType

pytestmark = pytest.mark.parametrize("backend", ["mariadb", "postgresql"])


def sorts_to_check(obj: ObjectType, plan: ReadPlan) -> Iterator[tuple[SortKey, ...]]:
    table = plan.table
    declared = default_sort(obj)
    if declared and all(index_serves_sort(table.c[k.field.column]) for k in declared):
        yield declared
        yield tuple(SortKey(k.field, not k.descending) for k in declared)
    for field in obj.fields:
        if not field.sortable or field.kind == "id" or field.write_only:
            continue
        if index_serves_sort(table.c[field.column]):
            for descending in (False, True):
                yield (SortKey(field, descending),)


def first_page(plan: ReadPlan, sort: tuple[SortKey, ...], dialect: str, parent: bool) -> Any:
    order = compile_order(sort, plan.obj, plan.table, dialect=dialect)
    stmt = plan.select().where(plan.tenant_predicate(1))
    if parent and plan.obj.parent is not None and plan.obj.parent.field != "account_id":
        stmt = stmt.where(plan.table.c[plan.obj.parent.field] == 1)
    return stmt.order_by(*order_by_clauses(order, dialect=dialect)).limit(51)


def sorts_the_tenant(plan_text: str, dialect: str) -> bool:
    if dialect == "mysql":
        return "filesort" in plan_text.lower()
    return any(
        node.get("Node Type") in ("Sort", "Incremental Sort") for node in _pg_nodes(plan_text)
    )


def _pg_nodes(plan_text: str) -> Iterator[dict[str, Any]]:
    stack = [json.loads(plan_text)[0]["Plan"]]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.get("Plans", []))


async def test_every_servable_sort_walks_an_index(database_url: str) -> None:
    settings = Settings(env="test", database_url=database_url)
    registry, tables = build_registry(settings)
    plans = build_plans(registry, tables)
    engine = create_engine(settings, autocommit=True)
    dialect = engine.dialect.name
    checked, sorted_by_db = 0, []
    try:
        async with engine.connect() as conn:
            if dialect == "postgresql":  # an empty table: ask whether an index *can* serve it
                await conn.execute(sa.text("SET enable_seqscan = off"))
                await conn.execute(sa.text("SET enable_sort = off"))
            for obj in registry:
                plan = plans[obj.name]
                for sort in sorts_to_check(obj, plan):
                    for parent in (False, True):
                        stmt = first_page(plan, sort, dialect, parent)
                        sql = str(
                            stmt.compile(
                                dialect=engine.dialect, compile_kwargs={"literal_binds": True}
                            )
                        )
                        prefix = (
                            "EXPLAIN FORMAT=JSON "
                            if dialect == "mysql"
                            else "EXPLAIN (FORMAT JSON) "
                        )
                        rows = (await conn.execute(sa.text(prefix + sql))).all()
                        text = rows[0][0] if isinstance(rows[0][0], str) else json.dumps(rows[0][0])
                        checked += 1
                        if sorts_the_tenant(text, dialect):
                            keys = ",".join(
                                ("-" if k.descending else "") + k.field.name for k in sort
                            )
                            sorted_by_db.append(f"{obj.name} sort={keys} parent={parent}")
    finally:
        await engine.dispose()
    assert checked > 40
    assert not sorted_by_db, sorted_by_db
