"""Generic CRUD handlers for every object type, flat and nested (SPEC 5).

Each handler is parse → authorise → resolve → execute: the path is checked against the
registry, the role against the type's permissions (before any body is read), the ancestors
and references are resolved to internal keys inside the caller's account, and one
transaction does the work. Every statement carries the account predicate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from engine.authenticate import authenticate
from engine.bodies import read_body
from engine.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    MethodNotAllowedError,
    NotFoundError,
    PreconditionFailedError,
    PreconditionRequiredError,
    ServiceUnavailableError,
    ValidationError,
)
from engine.listing import run_list, run_search
from engine.paths import CrudPath, parse_crud_path
from engine.plans import PK_LABEL, VERSION_LABEL, ReadPlan
from engine.principal import Principal
from engine.repository import IdCollisionError, fetch_one, transaction, translate_errors
from engine.responses import etag_for, json_response, matches_etag, not_modified, public_row
from engine.runtime import Runtime, get_runtime
from engine.schemas import schema_index_response, type_schema_response
from engine.scoping import locate, parent_condition, resolve_references
from engine.search import parse_fields
from models.base import new_public_id, utcnow
from registry.descriptors import ROLE_ORDER, ObjectType
from registry.types import BodyError, WriteErrors

CRUD_PREFIX = "/v3/crud/"
ID_ATTEMPTS = 3


async def crud_endpoint(request: Request) -> Response:
    """The single entry point for `/v3/crud/{path}`."""
    rt = get_runtime(request)
    principal = await authenticate(request)
    path = parse_crud_path(crud_segments(request), rt.registry)
    method = request.method
    if path.target == "index":
        _allow(method, ("GET",))
        return schema_index_response(request, rt)
    obj = path.obj
    assert obj is not None
    if path.target == "schema":
        _allow(method, ("GET",))
        _require_role(principal, obj.permissions.read_role, obj)
        return type_schema_response(request, rt, obj)
    if path.target == "search":
        _allow(method, ("POST",))
        _require_role(principal, obj.permissions.read_role, obj)
        body = await read_body(request)
        return await run_search(request, rt, principal, path, body)
    allowed = _allowed_methods(obj, path)
    _allow(method, allowed)
    if method in ("GET", "HEAD"):
        _require_role(principal, obj.permissions.read_role, obj)
        if path.target == "collection":
            return await run_list(request, rt, principal, path)
        return await read_item(request, rt, principal, path)
    _require_role(principal, obj.permissions.write_role, obj)
    if method == "POST":
        return await create_item(request, rt, principal, path)
    if method == "PATCH":
        return await update_item(request, rt, principal, path)
    return await delete_item(request, rt, principal, path)


def crud_segments(request: Request) -> list[str]:
    """The path segments after `/v3/crud/`, split before percent-decoding.

    An encoded slash (`%2F`) stays inside its segment, so it can never split an id in two
    or turn an item URL into a collection URL.
    """
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    text = raw.decode("latin-1").split("?", 1)[0]
    _, _, rest = text.partition(CRUD_PREFIX)
    return [unquote(part) for part in rest.split("/")] if rest.strip("/") else []


def _allowed_methods(obj: ObjectType, path: CrudPath) -> tuple[str, ...]:
    perms = obj.permissions
    if path.target == "collection":
        return ("GET", "HEAD", *(("POST",) if perms.create else ()))
    return (
        "GET",
        "HEAD",
        *(("PATCH",) if perms.update else ()),
        *(("DELETE",) if perms.delete else ()),
    )


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowedError(allowed, f"{method} is not offered here")


def _require_role(principal: Principal, role: str, obj: ObjectType) -> None:
    if not principal.has_role(role):
        raise ForbiddenError(f"The role {principal.role!r} cannot do this on {obj.name!r}")


def is_role_field(obj: ObjectType) -> bool:
    """Whether `obj` has a `role` field whose values are principal roles (users, API keys)."""
    field = obj.field("role")
    return field is not None and set(field.enum or ()) <= set(ROLE_ORDER)


def check_role_grant(
    principal: Principal,
    obj: ObjectType,
    values: Mapping[str, Any],
    current: Mapping[str, Any] | None = None,
) -> None:
    """No principal grants a role above its own, or changes a holder of a higher role.

    Applies to every type with a `role` field (users, API keys): an admin cannot make an
    owner, nor edit or delete one.
    """
    if not is_role_field(obj):
        return
    granted = values.get("role")
    if isinstance(granted, str) and not principal.has_role(granted):
        raise ForbiddenError("A role higher than your own cannot be granted")
    held = (current or {}).get("role")
    if isinstance(held, str) and not principal.has_role(held):
        raise ForbiddenError("An object holding a role higher than your own cannot be changed")


# -- item reads -------------------------------------------------------------------------


async def fetch_item(
    conn: AsyncConnection,
    plan: ReadPlan,
    public_id: str,
    account_id: int | None,
    parent_id: int | None,
    *,
    fields: list[str] | None = None,
) -> Mapping[str, Any]:
    stmt = plan.scoped(plan.select(fields), account_id).where(
        plan.table.c.id_random == public_id, parent_condition(plan, parent_id)
    )
    row = await fetch_one(conn, stmt)
    if row is None:
        raise NotFoundError(f"No {plan.obj.name} with that id")
    return row


async def read_item(
    request: Request, rt: Runtime, principal: Principal, path: CrudPath
) -> Response:
    obj = path.obj
    assert obj is not None and path.public_id is not None
    plan = rt.plans[obj.name]
    raw_fields = request.query_params.get("fields")
    fields = None if raw_fields is None else list(parse_fields(raw_fields, obj))
    async with transaction(rt.engine, obj) as conn:
        account_id, parent_id = await locate(conn, rt, principal, path)
        row = await fetch_item(conn, plan, path.public_id, account_id, parent_id, fields=fields)
    etag = etag_for(row[VERSION_LABEL])
    if matches_etag(request.headers.get("if-none-match"), etag):
        return not_modified(etag)
    return json_response(public_row(row), headers={"ETag": etag})


# -- writes -----------------------------------------------------------------------------


def _decode_body(rt: Runtime, obj: ObjectType, body: bytes) -> dict[str, msgspec.Raw]:
    try:
        return rt.decoders[obj.name].decode_object(body)
    except BodyError as exc:
        if exc.malformed:
            raise BadRequestError(exc.message) from exc
        raise ValidationError.single("", exc.message) from exc


def _write_errors(exc: WriteErrors) -> ValidationError:
    return ValidationError([{"path": e.path, "message": e.message} for e in exc.errors])


def _to_columns(obj: ObjectType, values: Mapping[str, Any]) -> dict[str, Any]:
    """Checked public values → column values (references excluded; transforms applied)."""
    columns: dict[str, Any] = {}
    for field in obj.fields:
        if field.name not in values or field.kind == "reference":
            continue
        value = values[field.name]
        if field.transform is not None and value is not None:
            value = field.transform(value)
        columns[field.column] = value
    return columns


async def create_item(
    request: Request, rt: Runtime, principal: Principal, path: CrudPath
) -> Response:
    obj = path.obj
    assert obj is not None
    plan = rt.plans[obj.name]
    raw = _decode_body(rt, obj, await read_body(request))
    supplied: dict[str, Any] = {}
    if path.parent is not None and obj.parent is not None:
        supplied[obj.parent.field] = path.parent.public_id
    try:
        values = rt.decoders[obj.name].create(raw, supplied=supplied)
    except WriteErrors as exc:
        raise _write_errors(exc) from exc
    check_role_grant(principal, obj, values)
    async with transaction(rt.engine, obj) as conn:
        account_id, parent_id = await locate(conn, rt, principal, path)
        known = {obj.parent.field: parent_id} if obj.parent and parent_id is not None else {}
        refs = await resolve_references(conn, rt, obj, values, account_id, known)
        columns = {**_to_columns(obj, values), **refs}
        if obj.tenant_owned:
            if account_id is None:
                raise ForbiddenError("Objects are created inside an account")
            columns["account_id"] = account_id
        now = utcnow()
        columns.update(created_at=now, updated_at=now, version=1)
        pk = await _insert(conn, plan, columns)
        row = await fetch_one(
            conn, plan.select().where(plan.pk == pk, plan.tenant_predicate(account_id))
        )
    assert row is not None
    location = _item_url(request, row["id"])
    return json_response(
        public_row(row),
        status=201,
        headers={"ETag": etag_for(row[VERSION_LABEL]), "Location": location},
    )


async def _insert(conn: AsyncConnection, plan: ReadPlan, columns: dict[str, Any]) -> int:
    for _ in range(ID_ATTEMPTS):
        columns["id_random"] = new_public_id()
        try:
            async with conn.begin_nested(), translate_errors(plan.obj):
                result = await conn.execute(plan.table.insert().values(**columns))
        except IdCollisionError:
            continue
        pk = result.inserted_primary_key
        assert pk is not None
        return int(pk[0])
    raise ServiceUnavailableError("Could not allocate a unique id; retry")


def _item_url(request: Request, public_id: str) -> str:
    base = request.url.path.rstrip("/")
    return f"{base}/{public_id}"


def _check_if_match(request: Request, rt: Runtime, version: int) -> int | None:
    """The version the client asserted with If-Match (412 when stale), or None."""
    header = request.headers.get("if-match")
    if header is None:
        if rt.settings.require_if_match:
            raise PreconditionRequiredError("Send If-Match with the ETag you last read")
        return None
    if not matches_etag(header, etag_for(version)):
        raise PreconditionFailedError("The object changed since you read it (ETag mismatch)")
    return version


async def update_item(
    request: Request, rt: Runtime, principal: Principal, path: CrudPath
) -> Response:
    obj = path.obj
    assert obj is not None and path.public_id is not None
    plan = rt.plans[obj.name]
    raw = _decode_body(rt, obj, await read_body(request))
    async with transaction(rt.engine, obj) as conn:
        account_id, parent_id = await locate(conn, rt, principal, path)
        current = await fetch_item(conn, plan, path.public_id, account_id, parent_id)
        version = int(current[VERSION_LABEL])
        _check_if_match(request, rt, version)
        try:
            values = rt.decoders[obj.name].update(raw, current=public_row(current))
        except WriteErrors as exc:
            raise _write_errors(exc) from exc
        check_role_grant(principal, obj, values, current)
        pk = int(current[PK_LABEL])
        if values:
            refs = await resolve_references(conn, rt, obj, values, account_id, {})
            columns = {**_to_columns(obj, values), **refs}
            columns.update(updated_at=_later(current.get("updated_at")), version=version + 1)
            result = await conn.execute(
                plan.table.update()
                .where(plan.pk == pk, plan.table.c.version == version)
                .values(**columns)
            )
            if result.rowcount != 1:
                raise PreconditionFailedError(
                    "The object changed while you wrote it; read it again"
                )
        row = await fetch_one(
            conn, plan.select().where(plan.pk == pk, plan.tenant_predicate(account_id))
        )
    assert row is not None
    return json_response(public_row(row), headers={"ETag": etag_for(row[VERSION_LABEL])})


def _later(previous: Any) -> dt.datetime:
    """Now, but strictly after `previous`, so `updated_at` moves on every update."""
    now = utcnow()
    if isinstance(previous, dt.datetime) and now <= previous:
        return previous + dt.timedelta(microseconds=1)
    return now


async def delete_item(
    request: Request, rt: Runtime, principal: Principal, path: CrudPath
) -> Response:
    obj = path.obj
    assert obj is not None and path.public_id is not None
    plan = rt.plans[obj.name]
    async with transaction(rt.engine, obj) as conn:
        account_id, parent_id = await locate(conn, rt, principal, path)
        role_field = ["role"] if is_role_field(obj) else []
        current = await fetch_item(
            conn, plan, path.public_id, account_id, parent_id, fields=role_field
        )
        version = int(current[VERSION_LABEL])
        _check_if_match(request, rt, version)
        check_role_grant(principal, obj, {}, current)
        pk = int(current[PK_LABEL])
        blockers = await blocking_types(conn, rt, obj, sa.literal(pk))
        if blockers:
            raise ConflictError(
                f"{obj.name} is still referenced by: {', '.join(blockers)}",
                errors=[{"path": name, "message": "references this object"} for name in blockers],
            )
        result = await conn.execute(
            plan.table.delete().where(plan.pk == pk, plan.table.c.version == version)
        )
        if result.rowcount != 1:
            raise PreconditionFailedError("The object changed while you deleted it")
    response = Response(status_code=204)
    response.headers["Cache-Control"] = "private, no-cache"
    return response


async def blocking_types(
    conn: AsyncConnection,
    rt: Runtime,
    obj: ObjectType,
    keys: sa.ColumnElement[Any] | sa.Select[Any],
    depth: int = 0,
) -> list[str]:
    """Types whose rows would block deleting the rows of `obj` with internal ids `keys`.

    A RESTRICT reference blocks; a CASCADE child is followed, since its own referrers block
    the cascade just the same.
    """
    blockers: list[str] = []
    if depth > len(rt.registry):
        return blockers
    for referrer, relation in rt.registry.referrers(obj.name):
        table = rt.tables[referrer.table]
        column = table.c[relation.field]
        matching = sa.select(table.c.id).where(
            column.in_(keys) if isinstance(keys, sa.Select) else column == keys
        )
        if relation.on_delete == "CASCADE":
            nested = await blocking_types(conn, rt, referrer, matching, depth + 1)
            blockers.extend(n for n in nested if n not in blockers)
        elif relation.on_delete in ("RESTRICT", "NO ACTION"):
            exists = (await conn.execute(sa.select(sa.exists(matching)))).scalar()
            if exists and referrer.name not in blockers:
                blockers.append(referrer.name)
    return blockers
