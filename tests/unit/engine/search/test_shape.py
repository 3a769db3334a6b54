"""Filter shapes: which filters may share one statement, and the values each binds.

Two filters share a statement only when the compiler would build the same SQL for both; the
values `filter_shape` lists are exactly those the compiler binds in slot mode, in order.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy.dialects import mysql, postgresql, sqlite

import models  # noqa: F401  # registers every model on Base
from engine.errors import ValidationError
from engine.search import compile_filter, filter_shape, parse_filter
from models.base import Base
from registry import introspect
from tests.unit.engine.search.strategies import filters

REG = introspect(Base)
TABLES = Base.metadata.tables
EVENT = REG["event"]
EVENT_TABLE = TABLES[EVENT.table]
DIALECTS = {
    "sqlite": sqlite.dialect(),
    "mysql": mysql.dialect(),
    "postgresql": postgresql.dialect(),
}
POOLS = {("event", "name"): ["Gala 50%"], ("event_session", "room"): ["A1"]}
TYPES = frozenset({"event", "account", "event_session", "event_person", "event_file", "file"})


def shape(body: dict[str, Any], dialect: str = "mysql") -> tuple[Any, list[Any]] | None:
    return filter_shape(parse_filter(body, EVENT, REG), EVENT_TABLE, dialect=dialect)


def sql(body: dict[str, Any], dialect: str) -> str:
    slots: list[Any] = []
    where = compile_filter(
        parse_filter(body, EVENT, REG), EVENT, REG, TABLES,
        account_id=7, dialect=dialect, slots=slots,
    )  # fmt: skip
    return str(where.compile(dialect=DIALECTS[dialect]))


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_values_do_not_change_a_shape_and_are_listed_in_order(dialect: str) -> None:
    small = shape({"capacity": {"_lt": 10}, "name": {"_startswith": "G"}}, dialect)
    large = shape({"capacity": {"_lt": 500}, "name": {"_startswith": "Board"}}, dialect)
    assert small is not None and large is not None
    assert small[0] == large[0]
    pattern = "G*" if dialect == "sqlite" else "G%"
    assert small[1] == [10, pattern]
    assert sql({"capacity": {"_lt": 10}}, dialect) == sql({"capacity": {"_lt": 500}}, dialect)


def test_what_changes_the_sql_changes_the_shape() -> None:
    base = shape({"capacity": {"_lt": 10}})
    assert base is not None
    # An integer the column cannot hold folds into a constant: another statement.
    folded = shape({"capacity": {"_lt": 2**40}})
    assert folded is not None and folded[0] != base[0] and folded[1] == []
    assert shape({"capacity": {"_gt": 10}})[0] != base[0]  # type: ignore[index]
    assert shape({"capacity": {"_is_null": True}}) != shape({"capacity": {"_is_null": False}})
    # MariaDB's text equality compares twice (a case-insensitive narrowing first), with one
    # parameter.
    for dialect in ("mysql", "postgresql"):
        assert shape({"name": {"_eq": "Gala"}}, dialect)[1] == ["Gala"]  # type: ignore[index]
    slots: list[Any] = []
    where = compile_filter(
        parse_filter({"name": {"_eq": "Gala"}}, EVENT, REG), EVENT, REG, TABLES,
        account_id=7, dialect="mysql", slots=slots,
    )  # fmt: skip
    assert where.compile(dialect=DIALECTS["mysql"]).positiontup == ["v0", "v0"]


def test_filters_whose_sql_follows_their_values_have_no_shape() -> None:
    assert shape({"status": {"_in": ["open", "draft"]}}) is None
    assert shape({"event_session": {"_some": {"room": "A1"}}}) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=filters(REG, "event", POOLS, depth=3, types=TYPES))
def test_the_shape_walk_and_the_compiler_bind_the_same_values(body: dict[str, Any]) -> None:
    try:
        node = parse_filter(body, EVENT, REG)
    except ValidationError:
        return
    for dialect in DIALECTS:
        found = filter_shape(node, EVENT_TABLE, dialect=dialect)
        if found is None:
            continue
        slots: list[Any] = []
        where = compile_filter(node, EVENT, REG, TABLES, account_id=7, dialect=dialect, slots=slots)
        assert slots == found[1], (dialect, body)
        compiled = where.compile(dialect=DIALECTS[dialect])
        # Values are bind parameters named by slot (SQLAlchemy may fold a branch that a
        # constant decides away, with its slots; the shape holds that constant too).
        assert {n for n in compiled.binds if n.startswith("v")} <= {
            f"v{i}" for i in range(len(slots))
        }
