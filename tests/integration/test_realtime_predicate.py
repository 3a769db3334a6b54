"""Subscription filters evaluated in Python agree with the SQL compiler, on each database.

The data set of `test_search_compile` (mixed case, LIKE/GLOB specials, Unicode, NULLs,
out-of-range integers in filters) is read back as the feed carries objects (a plan's row,
encoded to JSON and decoded); for random filters on the object's own fields (every
operator), `compile_predicate` must select exactly the rows the compiled WHERE clause does.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.errors import ValidationError
from engine.plans import PK_LABEL, ReadPlan
from engine.realtime.predicate import compile_predicate, parse_subscription_filter
from engine.search import parse_filter
from tests.integration.test_search_compile import (
    DATA,
    HYPOTHESIS,
    REG,
    TABLES,
    A,
    dataset,  # noqa: F401  # the fixture that inserts DATA
    run,
)
from tests.unit.engine.search.strategies import filters

OWN_FIELDS: frozenset[str] = (
    frozenset()
)  # no relations: a subscription filter names the object's own fields
TYPES = ("event", "event_session", "event_person")


async def published_items(engine: AsyncEngine, type_name: str) -> dict[int, dict[str, Any]]:
    """Account A's objects of `type_name` as the feed carries them (GET shape, via JSON)."""
    plan = ReadPlan(REG[type_name], REG, TABLES)
    async with engine.connect() as conn:
        rows = (await conn.execute(plan.scoped(plan.select(), A))).mappings().all()
    return {
        int(row[PK_LABEL]): msgspec.json.decode(
            msgspec.json.encode(plan.public(list(row.values())))
        )
        for row in rows
    }


def ops_used(body: Any) -> set[str]:
    if isinstance(body, dict):
        return {k for k in body if k.startswith("_")} | {
            op for v in body.values() for op in ops_used(v)
        }
    if isinstance(body, list):
        return {op for v in body for op in ops_used(v)}
    return set()


@pytest.mark.parametrize("type_name", TYPES)
@HYPOTHESIS
@given(data=st.data())
async def test_python_predicates_agree_with_sql(
    dataset: AsyncEngine,  # noqa: F811
    type_name: str,
    data: Any,
) -> None:
    obj = REG[type_name]
    body = data.draw(filters(REG, type_name, DATA.pools, depth=2, types=OWN_FIELDS))
    try:
        node = parse_subscription_filter(body, obj, REG, role="owner")
    except ValidationError:
        return
    items = await published_items(dataset, type_name)
    predicate = compile_predicate(node, dataset.dialect.name)
    expected = sorted(await run(dataset, node, (), obj))
    assert sorted(pk for pk, item in items.items() if predicate(item)) == expected, body


async def test_every_operator_is_exercised(dataset: AsyncEngine) -> None:  # noqa: F811
    """A table of one case per operator and field kind, so no operator goes untested."""
    event = REG["event"]
    first = next(r for r in DATA.rows["event"] if r["account_id"] == A)
    cases = [
        {"name": {"_eq": "Gala"}}, {"name": {"_neq": "Gala"}}, {"name": {"_gt": "a"}},
        {"name": {"_gte": "Zz"}}, {"name": {"_lt": "b"}}, {"name": {"_lte": "x"}},
        {"name": {"_in": ["gala", "x "]}}, {"name": {"_nin": ["gala"]}},
        {"name": {"_between": ["a", "z"]}}, {"name": {"_like": "%a\\_b%"}},
        {"name": {"_ilike": "GA%"}}, {"name": {"_contains": "%"}}, {"name": {"_icontains": "ALA"}},
        {"name": {"_startswith": "a!"}}, {"name": {"_endswith": " "}},
        {"venue": {"_is_null": True}}, {"venue": {"_is_null": False}},
        {"capacity": {"_gt": 2**40}}, {"capacity": {"_lt": -(2**63)}},
        {"capacity": {"_between": [5, 1000]}}, {"capacity": {"_nin": [0, 2**31]}},
        {"starts_at": {"_gte": "2026-01-01T00:00:00.000001Z"}},
        {"ends_at": {"_lt": "2026-01-02T00:00:00+05:30"}},
        {"status": {"_in": ["open", "draft"]}}, {"status": {"_neq": "open"}},
        {"id": first["id_random"]}, {"id": {"_nin": [first["id_random"]]}},
        {"id": "not an id"}, {"account_id": DATA.rows["account"][0]["id_random"]},
        {"account_id": {"_neq": DATA.rows["account"][1]["id_random"]}},
        {"_not": {"_or": [{"code": {"_is_null": True}}, {"code": {"_startswith": "EV"}}]}},
    ]  # fmt: skip
    assert ops_used(cases) >= {
        "_eq", "_neq", "_gt", "_gte", "_lt", "_lte", "_in", "_nin", "_between", "_like",
        "_ilike", "_contains", "_icontains", "_startswith", "_endswith", "_is_null",
    }  # fmt: skip
    items = await published_items(dataset, "event")
    for body in cases:
        node = parse_filter(body, event, REG)
        predicate = compile_predicate(node, dataset.dialect.name)
        expected = sorted(await run(dataset, node, (), event))
        assert sorted(pk for pk, item in items.items() if predicate(item)) == expected, body


def test_relations_are_refused_with_their_paths() -> None:
    event = REG["event"]
    body = {"_or": [{"account": {}}, {"event_session": {"_some": {}}}], "name": "x"}
    with pytest.raises(ValidationError) as refused:
        parse_subscription_filter(body, event, REG, role="owner")
    assert [e["path"] for e in refused.value.errors] == [
        "filter._or[0].account",
        "filter._or[1].event_session",
    ]
