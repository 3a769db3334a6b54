"""Every backend answers and holds full Unicode: the ground every integration test stands on."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.runtime import Runtime
from models.base import Base
from tests.integration.conftest import Api


async def test_backend_round_trips_four_byte_text(db_engine: AsyncEngine) -> None:
    account = Base.metadata.tables["account"]
    async with db_engine.begin() as conn:
        await conn.execute(
            account.insert().values(
                id_random="a" * 22,
                name="Gala 🎉 ünïcødé",
                slug="gala",
                status="active",
                settings={},
                created_at=sa.func.now(),
                updated_at=sa.func.now(),
                version=1,
            )
        )
        name = (await conn.execute(sa.select(account.c.name))).scalar_one()
    assert name == "Gala 🎉 ünïcødé"


class _Abort(Exception):
    pass


def _account_row(slug: str) -> dict[str, object]:
    return {
        "id_random": (slug * 22)[:22],
        "name": slug,
        "slug": slug,
        "status": "active",
        "settings": {},
        "created_at": sa.func.now(),
        "updated_at": sa.func.now(),
        "version": 1,
    }


async def _slugs(rt: Runtime) -> set[str]:
    account = Base.metadata.tables["account"]
    async with rt.reader.connect() as conn:
        return set((await conn.execute(sa.select(account.c.slug))).scalars())


async def test_a_savepoint_never_commits_the_outer_transaction(api: Api) -> None:
    """`rt.engine` runs real transactions on every backend (SQLite included: BEGIN IMMEDIATE,
    not the driver's implicit BEGIN): leaving a `begin_nested()` block releases the
    savepoint only, and an error afterwards rolls back all of it."""
    rt = api.runtime
    account = Base.metadata.tables["account"]
    with pytest.raises(_Abort):
        async with rt.engine.begin() as conn:
            # The savepoint is the first statement: with the driver's implicit BEGIN it
            # would open the transaction itself, and its RELEASE would commit the row.
            async with conn.begin_nested():
                await conn.execute(account.insert().values(**_account_row("nested")))
            await conn.execute(account.insert().values(**_account_row("outer")))
            raise _Abort
    assert not {"outer", "nested"} & await _slugs(rt)


async def test_a_savepoint_rolls_back_alone_and_the_outer_work_commits(api: Api) -> None:
    rt = api.runtime
    account = Base.metadata.tables["account"]
    async with rt.engine.begin() as conn:
        await conn.execute(account.insert().values(**_account_row("kept")))
        with pytest.raises(_Abort):
            async with conn.begin_nested():
                await conn.execute(account.insert().values(**_account_row("undone")))
                raise _Abort
        await conn.execute(account.insert().values(**_account_row("after")))
    slugs = await _slugs(rt)
    assert {"kept", "after"} <= slugs and "undone" not in slugs
