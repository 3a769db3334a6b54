"""Where a request may reach: the account it is scoped to, its ancestors, its references.

Every statement the engine runs on behalf of a principal is scoped to one account (or, for a
system key listing accounts, to none). Ancestors in a nested path and public ids in a body are
resolved to internal keys inside that account; anything outside it is "not found".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.errors import ForbiddenError, NotFoundError, ValidationError
from engine.paths import CrudPath
from engine.plans import ACCOUNT_PARAM, ID_PARAM, account_column, ancestor_key, ancestor_param
from engine.principal import Principal
from engine.runtime import Runtime
from registry.descriptors import ObjectType


async def scope_account(
    conn: AsyncConnection, rt: Runtime, principal: Principal, path: CrudPath
) -> int | None:
    """The internal account id every statement of this request is scoped to.

    A tenant is scoped to its own account. A system key acts inside the account named at
    the root of the path (`/v3/crud/account/{id}/...`), or across accounts when it lists
    accounts themselves.
    """
    if not principal.is_system:
        return principal.account_id
    if path.ancestors and path.ancestors[0].obj.name == "account":
        account = rt.tables["account"]
        found = (
            await conn.execute(
                sa.select(account.c.id).where(account.c.id_random == path.ancestors[0].public_id)
            )
        ).scalar()
        if found is None:
            raise NotFoundError("No account with that id")
        return int(found)
    if path.obj is not None and path.obj.name == "account":
        return None
    raise ForbiddenError("A system key acts in an account through /v3/crud/account/{id}/...")


async def resolve_parent(
    conn: AsyncConnection, rt: Runtime, path: CrudPath, account_id: int | None
) -> int | None:
    """The internal key of the nearest ancestor in the path, checking the whole chain."""
    if not path.ancestors:
        return None
    stmt = sa.select(ancestor_key(ancestor_types(path), rt.tables, scoped=account_id is not None))
    found = (await conn.execute(stmt, bind_params(path, account_id))).scalar()
    if found is None:
        last = path.ancestors[-1]
        raise NotFoundError(f"No {last.obj.name} with that id")
    return int(found)


def account_public_id(principal: Principal, path: CrudPath) -> str | None:
    """The public id of the account a request is scoped to (None: no single account)."""
    if not principal.is_system:
        return principal.account_public_id
    first = path.ancestors[0] if path.ancestors else None
    return first.public_id if first is not None and first.obj.name == "account" else None


def ancestor_types(path: CrudPath) -> tuple[ObjectType, ...]:
    return tuple(step.obj for step in path.ancestors)


def bind_params(path: CrudPath, account_id: int | None) -> dict[str, Any]:
    """The values of the bind parameters of a plan's statements for this path and account."""
    params: dict[str, Any] = {ancestor_param(i): s.public_id for i, s in enumerate(path.ancestors)}
    params[ACCOUNT_PARAM] = account_id
    if path.public_id is not None:
        params[ID_PARAM] = path.public_id
    return params


async def resolve_references(
    conn: AsyncConnection,
    rt: Runtime,
    obj: ObjectType,
    values: Mapping[str, Any],
    account_id: int | None,
    known: Mapping[str, int],
) -> dict[str, int | None]:
    """Internal keys for the reference fields in `values` (public ids), in the account."""
    resolved: dict[str, int | None] = {}
    missing: list[dict[str, str]] = []
    for field in obj.fields:
        if field.kind != "reference" or field.name not in values or field.read_only:
            continue
        public = values[field.name]
        if public is None:
            resolved[field.column] = None
            continue
        if field.name in known:
            resolved[field.column] = known[field.name]
            continue
        target = rt.registry[field.references or ""]
        table = rt.tables[target.table]
        stmt = sa.select(table.c.id).where(table.c.id_random == public)
        if account_id is not None:
            stmt = stmt.where(account_column(target, table) == account_id)
        found = (await conn.execute(stmt)).scalar()
        if found is None:
            missing.append({"path": field.name, "message": f"no {target.name} with this id"})
        else:
            resolved[field.column] = int(found)
    if missing:
        raise ValidationError(missing)
    return resolved


async def locate(
    conn: AsyncConnection, rt: Runtime, principal: Principal, path: CrudPath
) -> tuple[int | None, int | None]:
    """The account this request is scoped to and the internal key of its nearest ancestor."""
    account_id = await scope_account(conn, rt, principal, path)
    return account_id, await resolve_parent(conn, rt, path, account_id)
