"""Compiled filters and sorts against SQLite, MariaDB and PostgreSQL, checked by an oracle.

One generated data set (two accounts; events with mixed-case, `%`/`_`/GLOB-special and
Unicode names, NULLs, sessions and people, a few rows filed under the wrong account) is
inserted per test. Random recursive filters and sorts are parsed, compiled and run, and must
return exactly the ids, in exactly the order, that a pure-Python evaluation of the same AST
gives for account A. Keyset pages through signed cursors must cover every row once.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

import models  # noqa: F401  # registers every model on Base
from engine.errors import ValidationError
from engine.search import (
    And,
    Condition,
    FilterNode,
    Not,
    Or,
    RelationFilter,
    Some,
    SortKey,
    compile_filter,
    compile_order,
    cursor_values,
    decode_cursor,
    encode_cursor,
    filter_shape,
    keyset_predicate,
    order_by_clauses,
    parse_filter,
    query_signature,
    scope_predicate,
)
from models.base import Base, new_public_id
from registry import introspect
from registry.descriptors import ObjectType
from tests.unit.engine.search.strategies import ALPHABET, filters, rfc3339

REG = introspect(Base)
TABLES = Base.metadata.tables
EVENT = REG["event"]
TYPES = frozenset({"event", "account", "event_session", "event_person"})
A, B = 1, 2
KEY = b"integration-cursor-key-012345678"  # an AES-256 key
HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- the data set ------------------------------------------------------------------------------

NAMES = ["Gala", "gala", "GALA", "50% off", "50_ off", "a_b", "a!b", "a\\b", "x ", "x",
         "日本🎉", "ß", "éclair", "*?[]", "", "Zz"]  # fmt: skip
ROOMS = ["A1", "a1", "A1 ", "B2", "b%", None, None]


@dataclass
class Data:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pools: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def by_id(self, table: str) -> dict[int, dict[str, Any]]:
        return {r["id"]: r for r in self.rows[table]}


def build_data(seed: int = 20260101) -> Data:
    rng = random.Random(seed)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def moment() -> dt.datetime:
        return base + dt.timedelta(
            days=rng.choice([0, 0, 1, 30, -400]),
            minutes=rng.randint(0, 3),
            microseconds=rng.choice([0, 1, 999_999]),
        )

    def name() -> str:
        if rng.random() < 0.7:
            return rng.choice(NAMES)
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 5)))

    def maybe(value: Any, p: float = 0.3) -> Any:
        return None if rng.random() < p else value

    stamps = {"version": 1}
    data = Data()
    data.rows["account"] = [
        {"id": a, "id_random": new_public_id(), "name": n, "slug": s, "status": st_,
         "settings": {}, "created_at": moment(), "updated_at": moment(), **stamps}
        for a, n, s, st_ in [(A, "Alpha", "alpha", "active"), (B, "Beta", "beta", "suspended")]
    ]  # fmt: skip
    events, sessions, people = [], [], []
    for i in range(1, 61):
        starts = moment()
        events.append({
            "id": i, "id_random": new_public_id(), "account_id": A if i <= 42 else B,
            "name": name(), "code": maybe(f"{rng.choice(['ev', 'EV', 'Ev'])}{i}"),
            "status": rng.choice(["draft", "open", "closed", "archived"]),
            "starts_at": starts, "ends_at": maybe(starts + dt.timedelta(hours=rng.randint(0, 3))),
            "timezone": rng.choice(["UTC", "Europe/Paris"]), "venue": maybe(name()),
            "capacity": maybe(rng.choice([0, 5, 10, 1000, rng.randint(0, 2000)])), "metadata": {},
            "created_at": moment(), "updated_at": moment(), **stamps,
        })  # fmt: skip
    for ev in events:
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            account = (
                ev["account_id"] if rng.random() > 0.08 else (B if ev["account_id"] == A else A)
            )
            sessions.append({
                "id": len(sessions) + 1, "id_random": new_public_id(), "account_id": account,
                "event_id": ev["id"], "title": name(), "starts_at": moment(),
                "ends_at": maybe(moment()), "room": rng.choice(ROOMS),
                "capacity": maybe(rng.randint(0, 50)), "created_at": moment(),
                "updated_at": moment(), **stamps,
            })  # fmt: skip
        for _ in range(rng.choice([0, 1, 2])):
            account = (
                ev["account_id"] if rng.random() > 0.08 else (B if ev["account_id"] == A else A)
            )
            people.append({
                "id": len(people) + 1, "id_random": new_public_id(), "account_id": account,
                "event_id": ev["id"], "first_name": name(), "last_name": name(),
                "email": maybe(f"{rng.choice(['Ann', 'ann', 'BOB'])}@x.example"),
                "company": maybe(name()), "tags": [], "checked_in_at": maybe(moment(), 0.5),
                "created_at": moment(), "updated_at": moment(), **stamps,
            })  # fmt: skip
    # Rows filed under the wrong account: relation subqueries must never reach them.
    for ev, account in [(events[0], B), (events[1], B), (events[50], A), (events[55], A)]:
        sessions.append({**sessions[-1], "id": len(sessions) + 1, "id_random": new_public_id(),
                         "account_id": account, "event_id": ev["id"]})  # fmt: skip
    data.rows.update(event=events, event_session=sessions, event_person=people)
    for type_name in TYPES:
        obj = REG[type_name]
        for f in obj.fields:
            if f.kind == "reference":
                target = data.rows[REG[f.references or ""].table]
                data.pools[(type_name, f.name)] = [r["id_random"] for r in target]
                continue
            if f.kind in ("object", "array"):
                continue
            seen = {r[f.column] for r in data.rows[obj.table] if r[f.column] is not None}
            values = [rfc3339(v, 0) if isinstance(v, dt.datetime) else v for v in seen]
            data.pools[(type_name, f.name)] = sorted(values, key=repr)
    return data


DATA = build_data()


@pytest.fixture
async def dataset(db_engine: AsyncEngine) -> AsyncEngine:
    async with db_engine.begin() as conn:
        for table in ("account", "event", "event_session", "event_person"):
            await conn.execute(TABLES[table].insert(), DATA.rows[table])
    return db_engine


# -- the oracle ----------------------------------------------------------------------------------


def _in_scope(obj: ObjectType, row: dict[str, Any]) -> bool:
    return bool(row["account_id"] == A) if obj.tenant_owned else bool(row["id"] == A)


def _like(pattern: str, value: str) -> bool:
    out, chars = [], iter(pattern)
    for ch in chars:
        if ch == "\\":
            out.append(re.escape(next(chars, "\\")))
        else:
            out.append({"%": ".*", "_": "."}.get(ch, re.escape(ch)))
    return re.fullmatch("".join(out), value, re.DOTALL) is not None


def _reference_matches(cond: Condition, fk: int, values: tuple[str, ...]) -> bool:
    target = REG[cond.field.references or ""]
    ref = DATA.by_id(target.table).get(fk)
    return ref is not None and _in_scope(target, ref) and ref["id_random"] in values


def _condition(cond: Condition, row: dict[str, Any]) -> bool:
    op, want = cond.op, cond.value
    value = row[cond.field.column]
    if op == "_is_null":
        return (value is None) is want
    if value is None:
        return False
    if cond.field.kind == "reference":
        found = _reference_matches(cond, value, want if op in ("_in", "_nin") else (want,))
        return found if op in ("_eq", "_in") else not found
    checks = {
        "_eq": lambda: value == want,
        "_neq": lambda: value != want,
        "_gt": lambda: value > want,
        "_gte": lambda: value >= want,
        "_lt": lambda: value < want,
        "_lte": lambda: value <= want,
        "_in": lambda: value in want,
        "_nin": lambda: value not in want,
        "_between": lambda: want[0] <= value <= want[1],
        "_like": lambda: _like(want, value),
        "_ilike": lambda: _like(want.lower(), value.lower()),
        "_contains": lambda: want in value,
        "_icontains": lambda: want.lower() in value.lower(),
        "_startswith": lambda: value.startswith(want),
        "_endswith": lambda: value.endswith(want),
    }
    return bool(checks[op]())


def matches(node: FilterNode, obj: ObjectType, row: dict[str, Any]) -> bool:
    if isinstance(node, And):
        return all(matches(c, obj, row) for c in node.children)
    if isinstance(node, Or):
        return any(matches(c, obj, row) for c in node.children)
    if isinstance(node, Not):
        return not matches(node.child, obj, row)
    if isinstance(node, Condition):
        return _condition(node, row)
    target = REG[node.relation.target]
    if isinstance(node, RelationFilter):
        parent = DATA.by_id(target.table).get(row[node.relation.field])
        return (
            parent is not None and _in_scope(target, parent) and matches(node.node, target, parent)
        )
    found = any(
        _in_scope(target, child) and matches(node.node, target, child)
        for child in DATA.rows[target.table]
        if child[node.relation.field] == row["id"]
    )
    return found if isinstance(node, Some) else not found


def _compare(a: Any, b: Any) -> int:
    if a is None or b is None:  # NULL is the smallest value
        return (a is not None) - (b is not None)
    return (a > b) - (a < b)


def oracle_order(rows: list[dict[str, Any]], sort: tuple[SortKey, ...]) -> list[int]:
    def cmp(r1: dict[str, Any], r2: dict[str, Any]) -> int:
        for key in sort:
            c = _compare(r1[key.field.column], r2[key.field.column])
            if c:
                return -c if key.descending else c
        c = _compare(r1["id"], r2["id"])  # the tie-breaker runs in the last key's direction
        return -c if sort and sort[-1].descending else c

    return [r["id"] for r in sorted(rows, key=functools.cmp_to_key(cmp))]


# -- strategies and helpers ---------------------------------------------------------------------

SORTABLE = [f for f in EVENT.fields if f.sortable]
sorts = st.lists(
    st.builds(SortKey, st.sampled_from(SORTABLE), st.booleans()),
    max_size=3,
    unique_by=lambda k: k.field.name,
).map(tuple)


def _dialect(engine: AsyncEngine) -> str:
    return engine.dialect.name


async def run(
    engine: AsyncEngine,
    node: FilterNode,
    sort: tuple[SortKey, ...],
    obj: ObjectType = EVENT,
    *,
    where: Any = None,
    values: list[Any] | None = None,
) -> list[int]:
    """The ids `node` selects, in `sort` order; with `where` (a clause compiled in slot mode,
    perhaps for another filter of the same shape), that clause bound with `values`."""
    table, dialect = TABLES[obj.table], _dialect(engine)
    if where is None:
        where = compile_filter(node, obj, REG, TABLES, account_id=A, dialect=dialect)
    order = compile_order(sort, obj, table, dialect=dialect)
    query = (
        sa.select(table.c.id)
        .where(scope_predicate(obj, table, A), where)
        .order_by(*order_by_clauses(order, dialect=dialect))
    )
    params = {f"v{i}": v for i, v in enumerate(values or [])}
    async with engine.connect() as conn:
        return list((await conn.execute(query, params)).scalars())


#: Clauses compiled in slot mode, by dialect and shape, kept across examples: a later filter
#: of a known shape runs on the clause another filter built.
SHAPED: dict[tuple[str, Any], Any] = {}


def a_events() -> list[dict[str, Any]]:
    return [r for r in DATA.rows["event"] if r["account_id"] == A]


# -- tests ---------------------------------------------------------------------------------------


async def test_case_rules_and_literal_wildcards(dataset: AsyncEngine) -> None:
    cases = [
        ({"name": "Gala"}, lambda n: n == "Gala"),
        ({"name": {"_in": ["gala", "x"]}}, lambda n: n in ("gala", "x")),
        ({"name": {"_ilike": "gala"}}, lambda n: n.lower() == "gala"),
        ({"name": {"_icontains": "AL"}}, lambda n: "al" in n.lower()),
        ({"name": {"_contains": "0%"}}, lambda n: "0%" in n),
        ({"name": {"_startswith": "a_"}}, lambda n: n.startswith("a_")),
        ({"name": {"_like": "a\\_b"}}, lambda n: n == "a_b"),
        ({"name": {"_like": "G%"}}, lambda n: n.startswith("G")),
        ({"name": {"_eq": "x"}}, lambda n: n == "x"),  # "x " differs: no PAD SPACE
        ({"name": {"_endswith": "]"}}, lambda n: n.endswith("]")),
    ]
    for body, predicate in cases:
        expected = sorted(r["id"] for r in a_events() if predicate(r["name"]))
        got = await run(dataset, parse_filter(body, EVENT, REG), ())
        assert sorted(got) == expected, body
    assert any(r["name"] == "Gala" for r in a_events())


async def test_other_accounts_ids_match_nothing(dataset: AsyncEngine) -> None:
    b_account = DATA.rows["account"][1]["id_random"]
    b_event = next(r for r in DATA.rows["event"] if r["account_id"] == B)["id_random"]
    for body in (
        {"account_id": b_account},
        {"id": b_event},
        {"event_session": {"_some": {"event_id": b_event}}},
        {"id": "definitely not an id"},
    ):
        assert await run(dataset, parse_filter(body, EVENT, REG), ()) == [], body
    # A session filed under account A but attached to B's event: its event_id names nothing.
    session_type = REG["event_session"]
    stray = [s for s in DATA.rows["event_session"] if s["account_id"] == A and s["event_id"] > 42]
    assert stray
    for s in stray:
        event_id = DATA.by_id("event")[s["event_id"]]["id_random"]
        for body in ({"event_id": event_id}, {"event": {"id": event_id}}):
            node = parse_filter(body, session_type, REG)
            assert await run(dataset, node, (), session_type) == [], body
        with_event = parse_filter({"event": {}}, session_type, REG)
        assert s["id"] not in await run(dataset, with_event, (), session_type)
        everything = await run(dataset, parse_filter({}, session_type, REG), (), session_type)
        assert s["id"] in everything


@HYPOTHESIS
@given(body=filters(REG, "event", DATA.pools, depth=3, types=TYPES), sort=sorts)
async def test_filters_and_sorts_agree_with_the_oracle(
    dataset: AsyncEngine, body: dict[str, Any], sort: tuple[SortKey, ...]
) -> None:
    try:
        node = parse_filter(body, EVENT, REG)
    except ValidationError:
        return
    expected = oracle_order([r for r in a_events() if matches(node, EVENT, r)], sort)
    assert await run(dataset, node, sort) == expected
    # A filter of a shape shares the statement of its shape: bound with its own values, the
    # clause built for this filter, or for an earlier filter of the same shape, agrees.
    dialect = _dialect(dataset)
    shaped = filter_shape(node, TABLES[EVENT.table], dialect=dialect)
    if shaped is None:
        return
    shape, values = shaped
    slots: list[Any] = []
    own = compile_filter(node, EVENT, REG, TABLES, account_id=A, dialect=dialect, slots=slots)
    assert slots == values, body
    assert await run(dataset, node, sort, where=own, values=values) == expected
    earlier = SHAPED.setdefault((dialect, shape), own)
    if earlier is not own:
        assert await run(dataset, node, sort, where=earlier, values=values) == expected, body


@HYPOTHESIS
@given(
    body=st.one_of(st.just({}), filters(REG, "event", DATA.pools, depth=1, types=TYPES)),
    sort=sorts,
    page=st.integers(1, 9),
)
async def test_keyset_pages_cover_every_row_once(
    dataset: AsyncEngine, body: dict[str, Any], sort: tuple[SortKey, ...], page: int
) -> None:
    try:
        node = parse_filter(body, EVENT, REG)
    except ValidationError:
        return
    table, dialect = TABLES["event"], _dialect(dataset)
    order = compile_order(sort, EVENT, table, dialect=dialect)
    where = sa.and_(
        scope_predicate(EVENT, table, A),
        compile_filter(node, EVENT, REG, TABLES, account_id=A, dialect=dialect),
    )
    signature = query_signature(EVENT.name, node, sort)
    query = (
        sa.select(table.c.id, *(oc.column.label(oc.label) for oc in order))
        .order_by(*order_by_clauses(order, dialect=dialect))
        .limit(page)
    )
    seen: list[int] = []
    token: str | None = None
    async with dataset.connect() as conn:
        for _ in range(100):
            position = where
            if token is not None:
                values = decode_cursor(token, sort_signature=signature, key=KEY)
                position = sa.and_(where, keyset_predicate(order, values))
            rows = (await conn.execute(query.where(position))).mappings().all()
            seen.extend(r["id"] for r in rows)
            if len(rows) < page:
                break
            token = encode_cursor(cursor_values(order, rows[-1]), sort_signature=signature, key=KEY)
    expected = oracle_order([r for r in a_events() if matches(node, EVENT, r)], sort)
    assert seen == expected
