"""Generic CRUD handlers for every object type, flat and nested (SPEC 5).

Each handler is parse → authorise → resolve → execute: the path is checked against the
registry, the role against the type's permissions (before any body is read), and the work
is as few single statements as it can be, in autocommit: a read is one SELECT (ancestors
checked inside it), a create one INSERT … RETURNING (plus one lookup for a nested parent or
each reference), an update a SELECT and an UPDATE guarded by the version read, a delete a
SELECT and a DELETE the database cascades or refuses. Every statement carries the account
predicate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import msgspec
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Row
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
from engine.listing import (
    attach_includes,
    include_tree,
    needed_fields,
    only_asked,
    run_list,
    run_search,
)
from engine.paths import CrudPath, parse_crud_path
from engine.plans import ReadPlan, row_params
from engine.principal import Principal
from engine.realtime.writes import note_delete, note_write
from engine.replicas import direct_rows, read_for
from engine.repository import IdCollisionError, autocommit, translate_errors
from engine.responses import (
    etag_for,
    json_response,
    matches_etag,
    not_modified,
    valid_etag_list,
)
from engine.runtime import Runtime, get_runtime
from engine.schemas import schema_index_response, type_schema_response
from engine.scoping import (
    account_public_id,
    ancestor_types,
    bind_params,
    locate,
    resolve_parent,
    resolve_references,
    scope_account,
)
from engine.search import parse_fields, parse_include
from models.base import new_public_id, utcnow
from registry.descriptors import ROLE_ORDER, ObjectType
from registry.types import BodyError, WriteErrors

CRUD_PREFIX = "/v3/crud/"
ID_ATTEMPTS = 3


async def crud_endpoint(request: Request) -> Response:
    """The single entry point for `/v3/crud/{path}`."""
    principal = await authenticate(request)
    return await serve_crud(request, principal, crud_segments(request))


async def serve_crud(request: Request, principal: Principal, segments: list[str]) -> Response:
    """Answer the CRUD route named by `segments` (the path after `/v3/crud/`) for an
    authenticated `principal`; the legacy routes (engine/legacy) call it with theirs."""
    rt = get_runtime(request)
    path = parse_crud_path(segments, rt.registry)
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
    rt: Runtime,
    path: CrudPath,
    account_id: int | None,
    *,
    fields: list[str] | None = None,
) -> Row[Any]:
    """The object the path names, ancestors checked in the same statement; 404 when absent.

    On a miss the ancestors are looked up once more, so a missing parent says so.
    """
    obj = path.obj
    assert obj is not None
    plan = rt.plans[obj.name]
    ancestors = ancestor_types(path)
    stmt = plan.item(ancestors, scoped=account_id is not None, fields=fields)
    row: Row[Any] | None = (await conn.execute(stmt, bind_params(path, account_id))).first()
    if row is None:
        await resolve_parent(conn, rt, path, account_id)
        raise NotFoundError(f"No {obj.name} with that id")
    return row


async def read_item(
    request: Request, rt: Runtime, principal: Principal, path: CrudPath
) -> Response:
    obj = path.obj
    assert obj is not None and path.public_id is not None
    plan = rt.plans[obj.name]
    params = request.query_params
    unknown = [k for k in params if k not in _ITEM_PARAMS]
    if unknown:
        raise ValidationError([{"path": k, "message": "unknown query parameter"} for k in unknown])
    raw_fields = params.get("fields")
    includes = (
        parse_include(params["include"], obj, rt.registry, role=principal.role)
        if "include" in params
        else ()
    )
    asked = None if raw_fields is None else parse_fields(raw_fields, obj)
    fields = None if asked is None else needed_fields(obj, list(asked), includes)

    async def work(conn: AsyncConnection) -> tuple[dict[str, Any], int]:
        account_id = await scope_account(conn, rt, principal, path)
        row = await fetch_item(conn, rt, path, account_id, fields=fields)
        names = plan.names_for(fields)
        item = plan.public(row, names, account_public_id(principal, path))
        if includes:
            pk = int(row[len(names)])
            await attach_includes(conn, rt, obj, [item], [pk], include_tree(includes), account_id)
            (item,) = only_asked([item], asked, includes)
        return item, int(row[len(names) + 1])

    found = None if includes or fields else await _read_item_direct(rt, principal, path)
    item, version = found if found is not None else await read_for(rt, principal, work, obj)
    etag = etag_for(version)
    if matches_etag(request.headers.get("if-none-match"), etag, weak=True):
        return not_modified(etag)
    return json_response(item, headers={"ETag": etag})


_ITEM_PARAMS = frozenset({"fields", "include"})


async def _read_item_direct(
    rt: Runtime, principal: Principal, path: CrudPath
) -> tuple[msgspec.Struct | dict[str, Any], int] | None:
    """The whole object and its version by the prebuilt statement on the driver connection
    (`DirectReader`), or None: read it the usual way (a system key, which needs its account
    looked up; a miss under ancestors, which must say whether the parent exists; anything the
    shortcut could not do)."""
    if principal.is_system:
        return None
    obj = path.obj
    assert obj is not None
    plan = rt.plans[obj.name]
    ancestors = ancestor_types(path)
    stmt = plan.item(ancestors)
    rows = await direct_rows(
        rt, principal, stmt, bind_params(path, principal.account_id), encoded=plan.encoded
    )
    if rows is None or (not rows and ancestors):
        return None
    if not rows:
        raise NotFoundError(f"No {obj.name} with that id")
    row = rows[0]
    item = plan.record(row, plan.names, principal.account_public_id)
    return item, int(row[len(plan.names) + 1])


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


def _check_granted_role(principal: Principal, obj: ObjectType, raw: Mapping[str, Any]) -> None:
    """Authorisation before validation: `check_role_grant` on the body's raw `role`, so a
    role above the caller's own is a 403 whatever else the body holds."""
    if not is_role_field(obj) or "role" not in raw:
        return
    try:
        granted = msgspec.json.decode(raw["role"])
    except msgspec.DecodeError:
        return  # not a role at all: validation says so
    if granted in ROLE_ORDER:
        check_role_grant(principal, obj, {"role": granted})


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


async def _columns(obj: ObjectType, values: Mapping[str, Any]) -> dict[str, Any]:
    """`_to_columns`, in a worker thread when a transform (password hashing) has work to do,
    so the event loop never waits for it; call it before any connection is taken."""
    if any(f.transform is not None and values.get(f.name) is not None for f in obj.fields):
        return await asyncio.to_thread(_to_columns, obj, values)
    return _to_columns(obj, values)


Transformed = dict[str, tuple[Any, Any]]


async def _transform_ahead(obj: ObjectType, raw: Mapping[str, msgspec.Raw]) -> Transformed:
    """For an update, whose values are only known once the stored object is read: the
    transformed form of each transformable field the body carries, computed in a worker
    thread before the connection is taken, keyed by the plain value it was made from."""
    ahead: Transformed = {}
    for field in obj.fields:
        if field.transform is None or field.name not in raw:
            continue
        try:
            plain = msgspec.json.decode(raw[field.name])
        except msgspec.DecodeError:
            continue  # validation says what is wrong
        if isinstance(plain, str):
            ahead[field.name] = (plain, await asyncio.to_thread(field.transform, plain))
    return ahead


async def _update_columns(
    obj: ObjectType, values: Mapping[str, Any], ahead: Transformed
) -> dict[str, Any]:
    """`_to_columns` using the values transformed ahead (the same plain value only; any
    other still goes to a worker thread)."""
    plain = {k: v for k, v in values.items() if not (k in ahead and ahead[k][0] == v)}
    columns = await _columns(obj, plain)
    for field in obj.fields:
        if field.name in values and field.name not in plain:
            columns[field.column] = ahead[field.name][1]
    return columns


def _utc(value: Any) -> Any:
    return value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else value


def _written(
    plan: ReadPlan, stored: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """The object as a read would return it: `stored` (a previous read, or an INSERT's
    RETURNING) overlaid with the public `values` just written (references as public ids)."""
    return {name: _utc(values[name]) if name in values else stored.get(name) for name in plan.names}


async def create_item(
    request: Request, rt: Runtime, principal: Principal, path: CrudPath
) -> Response:
    obj = path.obj
    assert obj is not None
    plan = rt.plans[obj.name]
    raw = _decode_body(rt, obj, await read_body(request))
    _check_granted_role(principal, obj, raw)
    supplied: dict[str, Any] = {}
    if path.parent is not None and obj.parent is not None:
        supplied[obj.parent.field] = path.parent.public_id
    try:
        values = rt.decoders[obj.name].create(raw, supplied=supplied)
    except WriteErrors as exc:
        raise _write_errors(exc) from exc
    check_role_grant(principal, obj, values)
    columns = await _columns(obj, values)
    async with autocommit(rt.reader, obj) as conn:
        account_id, parent_id = await locate(conn, rt, principal, path)
        known = {obj.parent.field: parent_id} if obj.parent and parent_id is not None else {}
        refs = await resolve_references(conn, rt, obj, values, account_id, known)
        columns.update(refs)
        if obj.tenant_owned:
            if account_id is None:
                raise ForbiddenError("Objects are created inside an account")
            columns["account_id"] = account_id
        now = utcnow()
        columns.update(created_at=now, updated_at=now, version=1)
        row = await _insert(conn, plan, columns)
        stored = dict(row._mapping)
        owner = account_public_id(principal, path)
        if plan.account_field is not None:  # the owning account: a reference no body carries
            stored[plan.account_field] = owner
        item = _written(plan, stored, values)
        note_write(conn, plan, owner, "create", item)
    return json_response(
        item,
        status=201,
        headers={"ETag": etag_for(1), "Location": _item_url(request, item["id"])},
    )


async def _insert(conn: AsyncConnection, plan: ReadPlan, columns: dict[str, Any]) -> Row[Any]:
    """INSERT … RETURNING in one statement (autocommit: it commits, or changes nothing)."""
    for _ in range(ID_ATTEMPTS):
        columns["id_random"] = new_public_id()
        try:
            async with translate_errors(plan.obj):
                result = await conn.execute(plan.insert, columns)
        except IdCollisionError:
            continue
        return result.one()
    raise ServiceUnavailableError("Could not allocate a unique id; retry")


def _item_url(request: Request, public_id: str) -> str:
    base = request.url.path.rstrip("/")
    return f"{base}/{public_id}"


def _if_match(request: Request, rt: Runtime) -> str | None:
    """The If-Match header (400 when malformed, 428 when required and absent)."""
    header = request.headers.get("if-match")
    if header is None:
        if rt.settings.require_if_match:
            raise PreconditionRequiredError("Send If-Match with the ETag you last read")
        return None
    if not valid_etag_list(header):
        raise BadRequestError('If-Match must be "*" or a list of quoted ETags, e.g. "3"')
    return header


def _check_if_match(header: str | None, version: int) -> None:
    if header is not None and not matches_etag(header, etag_for(version)):
        raise PreconditionFailedError("The object changed since you read it (ETag mismatch)")


#: How often an update without If-Match re-reads and retries when another write came first.
UPDATE_ATTEMPTS = 20


async def update_item(
    request: Request, rt: Runtime, principal: Principal, path: CrudPath
) -> Response:
    """Read, validate the merge, write under the version read: two statements.

    With If-Match a concurrent write is a 412; without, the client asked for no precondition,
    so the update is re-read and re-applied on the newer version.
    """
    obj = path.obj
    assert obj is not None and path.public_id is not None
    plan = rt.plans[obj.name]
    raw = _decode_body(rt, obj, await read_body(request))
    _check_granted_role(principal, obj, raw)
    if_match = _if_match(request, rt)
    ahead = await _transform_ahead(obj, raw)
    async with autocommit(rt.reader, obj) as conn:
        account_id = await scope_account(conn, rt, principal, path)
        for _ in range(UPDATE_ATTEMPTS):
            row = await fetch_item(conn, rt, path, account_id)
            current = plan.public(row, None, account_public_id(principal, path))
            version = int(row[len(plan.names) + 1])
            _check_if_match(if_match, version)
            try:
                values = rt.decoders[obj.name].update(raw, current=current)
            except WriteErrors as exc:
                raise _write_errors(exc) from exc
            check_role_grant(principal, obj, values, current)
            if not values:
                return json_response(current, headers={"ETag": etag_for(version)})
            columns = await _update_columns(obj, values, ahead)
            columns.update(await resolve_references(conn, rt, obj, values, account_id, {}))
            updated_at = _later(current.get("updated_at"))
            columns.update(updated_at=updated_at, version=version + 1)
            pk = int(row[len(plan.names)])
            result = await conn.execute(
                plan.update[account_id is not None],
                {**columns, **row_params(pk, version, account_id)},
            )
            if result.rowcount == 1:
                break
            if if_match is not None:
                raise PreconditionFailedError(
                    "The object changed while you wrote it; read it again"
                )
        else:
            raise ConflictError("The object is changing too often to update; retry")
        stored = {**current, "updated_at": updated_at, "version": version + 1}
        item = _written(plan, stored, values)
        note_write(conn, plan, account_public_id(principal, path), "update", item)
    if obj.name in AUTH_TYPES:
        await rt.principals.invalidate()
    if obj.parent is not None and obj.parent.field in columns and account_id is not None:
        await rt.ids.forget(account_id, [path.public_id])  # moved to another parent
    return json_response(item, headers={"ETag": etag_for(version + 1)})


#: Types whose changes can end a principal's access (keys, users, accounts).
AUTH_TYPES = frozenset({"api_key", "user", "account"})


def _later(previous: Any) -> dt.datetime:
    """Now, but strictly after `previous`, so `updated_at` moves on every update."""
    now = utcnow()
    if isinstance(previous, dt.datetime) and now <= previous:
        return previous + dt.timedelta(microseconds=1)
    return now


async def delete_item(
    request: Request, rt: Runtime, principal: Principal, path: CrudPath
) -> Response:
    """Read (role and version), then one DELETE; the database cascades or refuses.

    A refusal by a foreign key names the blocking types (looked up only then).
    """
    obj = path.obj
    assert obj is not None and path.public_id is not None
    plan = rt.plans[obj.name]
    if_match = _if_match(request, rt)
    async with autocommit(rt.reader, obj) as conn:
        account_id = await scope_account(conn, rt, principal, path)
        row = await fetch_item(conn, rt, path, account_id)
        account = account_public_id(principal, path)
        current = plan.public(row, None, account)
        pk, version = int(row[len(plan.names)]), int(row[len(plan.names) + 1])
        _check_if_match(if_match, version)
        check_role_grant(principal, obj, {}, current)
        await note_delete(conn, rt, obj, pk, account_id, account, current)
        try:
            result = await conn.execute(
                plan.delete[account_id is not None], row_params(pk, version, account_id)
            )
        except sa_exc.IntegrityError as exc:
            blockers = await blocking_types(conn, rt, obj, sa.literal(pk), account_id)
            raise ConflictError(
                f"{obj.name} is still referenced by: {', '.join(blockers) or 'other objects'}",
                errors=[{"path": name, "message": "references this object"} for name in blockers],
            ) from exc
        if result.rowcount != 1:
            raise PreconditionFailedError("The object changed while you deleted it")
    if account_id is not None:
        await rt.ids.forget(account_id, [path.public_id])
    if obj.name in AUTH_TYPES:
        await rt.principals.invalidate()
    response = Response(status_code=204)
    response.headers["Cache-Control"] = "private, no-cache"
    return response


async def blocking_types(
    conn: AsyncConnection,
    rt: Runtime,
    obj: ObjectType,
    keys: sa.ColumnElement[Any] | sa.Select[Any],
    account_id: int | None,
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
            column.in_(keys) if isinstance(keys, sa.Select) else column == keys,
            rt.plans[referrer.name].tenant_predicate(account_id),
        )
        if relation.on_delete == "CASCADE":
            nested = await blocking_types(conn, rt, referrer, matching, account_id, depth + 1)
            blockers.extend(n for n in nested if n not in blockers)
        elif relation.on_delete in ("RESTRICT", "NO ACTION"):
            exists = (await conn.execute(sa.select(sa.exists(matching)))).scalar()
            if exists and referrer.name not in blockers:
                blockers.append(referrer.name)
    return blockers
