"""`GET /v3/action/blob/{sha256}` and `GET /v3/action/download/{id}` (SPEC 6.2, 6.3).

Both read a `file` row of the caller's account and answer with `blob_response`: another
account's hash or id is a 404 exactly like a missing one. `download` finds which type owns
the public id (file, event_file or event) in one statement and sends the file as a named
attachment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from engine.actions import specs
from engine.actions.base import ActionContext
from engine.actions.upload import Role
from engine.blob_response import blob_response
from engine.blobs import is_sha256
from engine.errors import ForbiddenError, NotFoundError, ValidationError
from engine.replicas import read_for
from engine.runtime import Runtime

ROLES: tuple[str, ...] = get_args(Role)
_FILE_COLUMNS = ("name", "sha256", "size", "mime_type")


def _account(ctx: ActionContext) -> int:
    if ctx.principal.account_id is None:
        raise ForbiddenError("Files belong to an account; a system key cannot read them")
    return ctx.principal.account_id


def _file_select(rt: Runtime, account_id: int) -> sa.Select[Any]:
    table = rt.tables["file"]
    cols = [table.c[name] for name in _FILE_COLUMNS]
    return sa.select(*cols).where(table.c.account_id == account_id)


async def _one(conn: AsyncConnection, stmt: sa.Select[Any]) -> Mapping[str, Any] | None:
    row: Mapping[str, Any] | None = (await conn.execute(stmt.limit(1))).mappings().first()
    return row


def _send(request: Request, rt: Runtime, row: Mapping[str, Any], *, named: bool) -> Response:
    sha256 = str(row["sha256"])
    return blob_response(
        request,
        rt.blobs,
        sha256=sha256,
        size=int(row["size"]),
        mime_type=str(row["mime_type"]),
        filename=(row["name"] or "download") if named else None,
        content_location=f"/v3/action/blob/{sha256}" if named else None,
    )


class GetBlob:
    method = "GET"
    path = "/blob/{sha256}"
    min_role = "viewer"
    openapi: Any = specs.BLOB

    async def handle(self, ctx: ActionContext, request: Request) -> Response:
        account_id = _account(ctx)
        sha256 = request.path_params["sha256"]
        if not is_sha256(sha256):
            raise NotFoundError("No file with this hash")
        rt = ctx.runtime
        stmt = _file_select(rt, account_id).where(rt.tables["file"].c.sha256 == sha256)
        row = await read_for(rt, ctx.principal, lambda conn: _one(conn, stmt))
        if row is None:
            raise NotFoundError("No file with this hash")
        return _send(request, rt, row, named=False)


_KINDS = ("file", "event_file", "event")


def _download_select(
    rt: Runtime, account_id: int, public_id: str, role: str | None
) -> sa.CompoundSelect[Any]:
    """One statement naming which type owns `public_id` and the file it designates.

    A UNION ALL of three lookups, each carrying the account predicate on every table it
    reads: the `file` itself, an `event_file`'s file, and an `event`'s first file (lowest
    position, or the first with `role`) joined LEFT so an empty event still answers with
    NULL file columns. `kind` is the index of the branch in `_KINDS`.
    """
    files, event_files, events = (rt.tables[n] for n in ("file", "event_file", "event"))
    cols = [files.c[name] for name in _FILE_COLUMNS]

    def branch(kind: int) -> sa.Select[Any]:
        return sa.select(sa.literal_column(str(kind)).label("kind"), *cols)

    own_file = branch(0).where(files.c.id_random == public_id, files.c.account_id == account_id)
    via_link = (
        branch(1)
        .select_from(event_files)
        .join(files, sa.and_(files.c.id == event_files.c.file_id, files.c.account_id == account_id))
        .where(event_files.c.id_random == public_id, event_files.c.account_id == account_id)
    )
    first = (
        sa.select(event_files.c.file_id)
        .where(event_files.c.event_id == events.c.id, event_files.c.account_id == account_id)
        .order_by(event_files.c.position, event_files.c.created_at, event_files.c.id)
        .limit(1)
    )
    if role is not None:
        first = first.where(event_files.c.role == role)
    via_event = (
        branch(2)
        .select_from(events)
        .outerjoin(
            files,
            sa.and_(
                files.c.id == first.correlate(events).scalar_subquery(),
                files.c.account_id == account_id,
            ),
        )
        .where(events.c.id_random == public_id, events.c.account_id == account_id)
    )
    return sa.union_all(own_file, via_link, via_event)


async def resolve_download(
    conn: AsyncConnection, rt: Runtime, account_id: int, public_id: str, role: str | None
) -> Mapping[str, Any]:
    """The `file` row `public_id` designates in the account (SPEC 6.3), or NotFoundError.

    One statement whatever the id turns out to be (see `_download_select`).
    """
    result = await conn.execute(_download_select(rt, account_id, public_id, role))
    by_kind = {_KINDS[int(row.kind)]: dict(row._mapping) for row in result}
    for kind in ("file", "event_file"):
        if kind in by_kind:
            return by_kind[kind]
    event = by_kind.get("event")
    if event is None:
        raise NotFoundError(f"No file, event file or event {public_id!r}")
    if event["sha256"] is None:
        what = "no file" if role is None else f"no file with the role {role!r}"
        raise NotFoundError(f"The event {public_id!r} has {what}")
    return event


class Download:
    method = "GET"
    path = "/download/{id}"
    min_role = "viewer"
    openapi: Any = specs.DOWNLOAD

    async def handle(self, ctx: ActionContext, request: Request) -> Response:
        account_id = _account(ctx)
        role = request.query_params.get("role")
        if role is not None and role not in ROLES:
            raise ValidationError.single("role", f"must be one of {', '.join(ROLES)}")
        rt = ctx.runtime
        public_id = str(request.path_params["id"])
        row = await read_for(
            rt, ctx.principal, lambda conn: resolve_download(conn, rt, account_id, public_id, role)
        )
        return _send(request, rt, row, named=True)
