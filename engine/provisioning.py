"""Making accounts, users and API keys: shared by the CLI, the demo and the api_key action."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.auth.api_keys import generate_api_key
from models.base import new_public_id, utcnow
from models.security import hash_password


class NewApiKey(msgspec.Struct, frozen=True):
    id: str
    key: str
    pk: int


class NewAccount(msgspec.Struct, frozen=True):
    account_id: str
    user_id: str
    api_key: str
    pk: int


def _stamp() -> dict[str, Any]:
    now = utcnow()
    return {"id_random": new_public_id(), "created_at": now, "updated_at": now, "version": 1}


async def insert_api_key(
    conn: AsyncConnection,
    tables: dict[str, sa.Table],
    *,
    account_id: int | None,
    name: str,
    role: str,
    expires_at: dt.datetime | None = None,
) -> NewApiKey:
    """Store a new key (prefix and secret hash only) and return it with its plain text."""
    generated = generate_api_key()
    values = _stamp()
    api_key = tables["api_key"]
    result = await conn.execute(
        api_key.insert().values(
            **values,
            account_id=account_id,
            name=name,
            role=role,
            prefix=generated.prefix,
            secret_hash=generated.secret_hash,
            expires_at=expires_at,
        )
    )
    pk = result.inserted_primary_key
    assert pk is not None
    return NewApiKey(id=values["id_random"], key=generated.key, pk=int(pk[0]))


async def insert_account(
    conn: AsyncConnection,
    tables: dict[str, sa.Table],
    *,
    name: str,
    slug: str,
    owner_email: str,
    owner_password: str | None = None,
) -> NewAccount:
    """An account with its owner user and an owner API key."""
    account = tables["account"]
    values = _stamp()
    result = await conn.execute(
        account.insert().values(**values, name=name, slug=slug, status="active", settings={})
    )
    inserted = result.inserted_primary_key
    assert inserted is not None
    account_pk = int(inserted[0])
    user_values = _stamp()
    await conn.execute(
        tables["user"]
        .insert()
        .values(
            **user_values,
            account_id=account_pk,
            email=owner_email,
            name=None,
            role="owner",
            password_hash=hash_password(owner_password) if owner_password else None,
            is_active=True,
        )
    )
    key = await insert_api_key(conn, tables, account_id=account_pk, name="owner", role="owner")
    return NewAccount(
        account_id=values["id_random"],
        user_id=user_values["id_random"],
        api_key=key.key,
        pk=account_pk,
    )


async def find_account(
    conn: AsyncConnection, tables: dict[str, sa.Table], slug: str
) -> tuple[int, str] | None:
    account = tables["account"]
    row = (
        await conn.execute(
            sa.select(account.c.id, account.c.id_random).where(account.c.slug == slug)
        )
    ).first()
    return (int(row[0]), str(row[1])) if row else None
