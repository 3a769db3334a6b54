"""Every backend answers and holds full Unicode: the ground every integration test stands on."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from models.base import Base


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
