"""The account-scope checker the integration suite runs on every statement the app sends.

Statements are built with SQLAlchemy on the real model tables and compiled by the dialects
and drivers the engine uses (each with its own bind style: ?, %s, $1, %(name)s), so the
checker is tested on the SQL it meets, not on hand-written text alone.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.mysql import asyncmy
from sqlalchemy.dialects.postgresql import asyncpg, psycopg
from sqlalchemy.dialects.sqlite import aiosqlite
from sqlalchemy.engine import Dialect

from models.base import Base
from registry.introspect import load_models
from tests.tenant_scope import Checker, normalise_binds

DIALECTS: dict[str, Dialect] = {
    "sqlite": aiosqlite.dialect(),
    "mysql": asyncmy.dialect(),
    "postgresql": asyncpg.dialect(),
    "postgresql-pyformat": psycopg.dialect(),
}


@pytest.fixture(scope="module")
def tables() -> dict[str, sa.Table]:
    load_models(["models"])
    return dict(Base.metadata.tables)


@pytest.fixture(scope="module")
def checker(tables: dict[str, sa.Table]) -> Checker:
    return Checker([t.name for t in tables.values() if "account_id" in t.c])


def sql(stmt: sa.Executable, dialect: str) -> str:
    compiled = stmt.compile(dialect=DIALECTS[dialect], compile_kwargs={"render_postcompile": True})
    return str(compiled)


def check(checker: Checker, stmt: sa.Executable, dialect: str) -> list[str]:
    return checker.unscoped(sql(stmt, dialect), dialect.split("-")[0])


@pytest.fixture(params=list(DIALECTS))
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_bind_styles_sqlglot_misreads_become_literals() -> None:
    # `?` is read as a placeholder by every sqlglot dialect and is left alone
    assert normalise_binds("a = ? AND b = %s AND c = $12 AND d = %(d_1)s AND e LIKE '%%'") == (
        "a = ? AND b = '?' AND c = '?' AND d = '?' AND e LIKE '%'"
    )


def test_unscoped_select_update_delete_are_flagged(
    checker: Checker, tables: dict[str, sa.Table], dialect: str
) -> None:
    event = tables["event"]
    assert check(checker, sa.select(event.c.id).where(event.c.id == 7), dialect) == ["event"]
    assert check(checker, event.update().where(event.c.id == 7).values(name="x"), dialect) == [
        "event"
    ]
    assert check(checker, event.delete().where(event.c.id == 7), dialect) == ["event"]
    assert check(checker, event.delete(), dialect) == ["event"]
    assert check(checker, sa.select(sa.func.count()).select_from(event), dialect) == ["event"]


def test_scoped_select_update_delete_pass(
    checker: Checker, tables: dict[str, sa.Table], dialect: str
) -> None:
    event = tables["event"]
    scoped = sa.and_(event.c.account_id == 1, event.c.id == 7)
    assert check(checker, sa.select(event.c.id).where(scoped), dialect) == []
    assert check(checker, event.update().where(scoped).values(name="x"), dialect) == []
    assert check(checker, event.delete().where(scoped), dialect) == []
    assert check(checker, event.delete().where(event.c.account_id.in_([1, 2])), dialect) == []
    assert check(checker, event.insert().values(account_id=1, name="x"), dialect) == []


def test_a_constraint_under_or_does_not_scope(
    checker: Checker, tables: dict[str, sa.Table], dialect: str
) -> None:
    event = tables["event"]
    stmt = sa.select(event.c.id).where(sa.or_(event.c.account_id == 1, event.c.id == 7))
    assert check(checker, stmt, dialect) == ["event"]
    stmt = sa.select(event.c.id).where(sa.not_(event.c.account_id == 1))
    assert check(checker, stmt, dialect) == ["event"]


def test_aliases_and_references(
    checker: Checker, tables: dict[str, sa.Table], dialect: str
) -> None:
    event_file, file = tables["event_file"], tables["file"]
    a = event_file.alias("anc0")
    ref = file.alias("ref_file_id")
    joined = a.outerjoin(ref, ref.c.id == a.c.file_id)
    scoped = sa.select(a.c.id, ref.c.id_random).select_from(joined).where(a.c.account_id == 1)
    assert check(checker, scoped, dialect) == []
    # the referencing row is not scoped, so neither is the row it refers to
    unscoped = sa.select(a.c.id, ref.c.id_random).select_from(joined).where(a.c.id == 1)
    assert sorted(check(checker, unscoped, dialect)) == [
        "event_file AS anc0",
        "file AS ref_file_id",
    ]
    # a join by a non-key column does not carry the scope
    loose = (
        sa.select(a.c.id)
        .select_from(a.join(ref, ref.c.id_random == a.c.id_random))
        .where(a.c.account_id == 1)
    )
    assert check(checker, loose, dialect) == ["file AS ref_file_id"]
    # an equi-join on the account does
    by_account = (
        sa.select(a.c.id)
        .select_from(a.join(ref, ref.c.account_id == a.c.account_id))
        .where(a.c.account_id == 1)
    )
    assert check(checker, by_account, dialect) == []
    # but an account column equal to some other key of a scoped row does not
    wrong_key = (
        sa.select(a.c.id)
        .select_from(a.join(ref, ref.c.account_id == a.c.file_id))
        .where(a.c.account_id == 1)
    )
    assert check(checker, wrong_key, dialect) == ["file AS ref_file_id"]


def test_union_branches_and_subqueries_are_checked_each(
    checker: Checker, tables: dict[str, sa.Table], dialect: str
) -> None:
    event, file = tables["event"], tables["file"]
    union = sa.union_all(
        sa.select(event.c.id).where(event.c.account_id == 1),
        sa.select(file.c.id).where(file.c.id == 2),
    )
    assert check(checker, union, dialect) == ["file"]
    inner = sa.select(file.c.id).where(file.c.id == 2).scalar_subquery()
    outer = sa.select(event.c.id).where(event.c.account_id == 1, event.c.id == inner)
    assert check(checker, outer, dialect) == ["file"]
    scoped_inner = sa.select(file.c.id).where(file.c.account_id == 1).scalar_subquery()
    outer = sa.select(event.c.id).where(event.c.account_id == 1, event.c.id == scoped_inner)
    assert check(checker, outer, dialect) == []
    derived = sa.select(event.c.id).where(event.c.account_id == 1).subquery()
    assert check(checker, sa.select(sa.func.count()).select_from(derived), dialect) == []
    correlated = sa.exists().where(file.c.account_id == event.c.account_id)
    stmt = sa.select(event.c.id).where(event.c.account_id == 1, correlated)
    assert check(checker, stmt, dialect) == []


def test_the_account_table_is_scoped_by_its_id(
    checker: Checker, tables: dict[str, sa.Table], dialect: str
) -> None:
    account = tables["account"]
    assert check(checker, sa.select(account.c.name).where(account.c.id == 1), dialect) == []
    stmt = sa.select(account.c.name).where(account.c.slug == "alpha")
    assert check(checker, stmt, dialect) == ["account"]
    assert check(checker, sa.select(account.c.name), dialect) == ["account"]


def test_a_query_that_matches_nothing_reads_nothing(
    checker: Checker, tables: dict[str, sa.Table], dialect: str
) -> None:
    event = tables["event"]
    stmt = sa.select(sa.literal(1)).select_from(sa.select(event.c.id).where(sa.false()).subquery())
    assert check(checker, stmt, dialect) == []
    # a bound value is never taken for a constant
    stmt = sa.select(event.c.id).where(sa.literal(0) == 1)
    assert check(checker, stmt, dialect) == ["event"]


def test_unparsable_sql_naming_a_tenant_table_is_flagged(checker: Checker) -> None:
    assert checker.unscoped("SELECT FROM WHERE event ((", "sqlite") != []
    assert checker.unscoped("SELECT 1", "sqlite") == []
