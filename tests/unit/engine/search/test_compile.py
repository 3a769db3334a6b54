"""The filter compiler without a database: account scoping of every subquery, bound values,
and the pattern translations (LIKE with `!` escapes, SQLite GLOB)."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql import visitors

import models  # noqa: F401  # registers every model on Base
from engine.errors import BadRequestError, ValidationError
from engine.search import compile_filter, compile_order, keyset_predicate, parse_filter, parse_sort
from engine.search.compile import like_tokens, literal_tokens, to_glob, to_like
from models.base import Base
from registry import introspect
from tests.unit.engine.search.strategies import ALPHABET, filters

REG = introspect(Base)
TABLES = Base.metadata.tables
EVENT = REG["event"]
DIALECTS = {
    "sqlite": sqlite.dialect(),
    "mysql": mysql.dialect(),
    "postgresql": postgresql.dialect(),
}
ACCOUNT = 424242
POOLS = {("event", "name"): ["Gala 50%"], ("event_session", "room"): ["A1"]}
TYPES = frozenset({"event", "account", "event_session", "event_person", "event_file", "file"})


def _scoped(select: sa.Select[Any]) -> bool:
    """Whether `select`'s own WHERE compares one of its aliases' account column with ACCOUNT
    (outer tables appear among its FROMs until correlated, but carry no criteria here)."""
    columns = set()
    for source in select.get_final_froms():
        if isinstance(source, sa.Alias):
            table = source.element
            columns.add(source.c.id if table.name == "account" else source.c.account_id)
    for crit in select._where_criteria:
        clauses = crit.clauses if isinstance(crit, sa.BooleanClauseList) else [crit]
        for clause in clauses:
            if (
                isinstance(clause, sa.BinaryExpression)
                and clause.left in columns
                and isinstance(clause.right, sa.BindParameter)
                and clause.right.value == ACCOUNT
            ):
                return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filters(REG, "event", POOLS, depth=3, types=TYPES), st.sampled_from(sorted(DIALECTS)))
def test_every_subquery_is_scoped_and_values_are_bound(body: dict[str, Any], dialect: str) -> None:
    try:
        node = parse_filter(body, EVENT, REG)
    except ValidationError:
        return
    clause = compile_filter(node, EVENT, REG, TABLES, account_id=ACCOUNT, dialect=dialect)
    selects = [e for e in visitors.iterate(clause) if isinstance(e, sa.Select)]
    assert all(_scoped(s) for s in selects)
    sql = str(sa.select(TABLES["event"].c.id).where(clause).compile(dialect=DIALECTS[dialect]))
    assert str(ACCOUNT) not in sql  # bound, never inlined
    for value in ("Gala 50%", "A1"):
        assert value not in sql


def test_system_principal_has_no_tenant_predicate() -> None:
    node = parse_filter({"event_session": {"_some": {"room": "A1"}}}, EVENT, REG)
    clause = compile_filter(node, EVENT, REG, TABLES, account_id=None, dialect="postgresql")
    assert "account_id" not in str(clause)


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_mariadb_compares_text_under_a_binary_collation(dialect: str) -> None:
    node = parse_filter(
        {"name": {"_eq": "A", "_gt": "b", "_contains": "c"}, "status": {"_in": ["open"]}},
        EVENT,
        REG,
    )
    sql = str(
        compile_filter(node, EVENT, REG, TABLES, account_id=1, dialect=dialect).compile(
            dialect=DIALECTS[dialect]
        )
    )
    assert ("utf8mb4_nopad_bin" in sql) == (dialect == "mysql")
    assert ('COLLATE "C"' in sql) == (dialect == "postgresql")
    assert ("GLOB" in sql) == (dialect == "sqlite")
    assert "ESCAPE '\\" not in sql


def _like_regex(pattern: str, escape: str = "!") -> re.Pattern[str]:
    out, chars = [], iter(pattern)
    for ch in chars:
        if ch == escape:
            out.append(re.escape(next(chars)))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _user_regex(pattern: str) -> re.Pattern[str]:
    out, chars = [], iter(pattern)
    for ch in chars:
        if ch == "\\":
            out.append(re.escape(next(chars, "\\")))
        else:
            out.append({"%": ".*", "_": "."}.get(ch, re.escape(ch)))
    return re.compile("".join(out), re.DOTALL)


text = st.text(alphabet=ALPHABET, max_size=6)


@settings(max_examples=300)
@given(st.text(alphabet=ALPHABET, max_size=5), text)
def test_translations_agree_with_the_user_pattern(pattern: str, value: str) -> None:
    tokens = like_tokens(pattern)
    expected = bool(_user_regex(pattern).fullmatch(value))
    assert bool(_like_regex(to_like(tokens)).fullmatch(value)) is expected
    glob = to_glob(tokens)
    # fnmatch shares GLOB's `*`, `?` and `[...]` classes (it has no escapes, like GLOB).
    assert fnmatch.fnmatchcase(value, glob) is expected


@settings(max_examples=200)
@given(text, text)
def test_literal_tokens_match_only_the_literal(needle: str, value: str) -> None:
    assert bool(_like_regex(to_like(literal_tokens(needle))).fullmatch(value)) is (needle == value)


def test_keyset_refuses_a_cursor_of_another_shape() -> None:
    order = compile_order(
        parse_sort(["name"], EVENT, path="sort"), EVENT, TABLES["event"], dialect="sqlite"
    )
    assert len(order) == 2  # name, then the internal id
    with pytest.raises(BadRequestError):
        keyset_predicate(order, ["x"])
