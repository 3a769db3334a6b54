"""`GET /v3/action/blob/{sha256}` and `GET /v3/action/download/{id}` (SPEC 6.2, 6.3).

Both read a `file` row of the caller's account and answer with `blob_response`: another
account's hash or id is a 404 exactly like a missing one. `download` finds which type owns
the public id (file, event_file or event) in one statement and sends the file as a named
attachment; when the id cache knows the type, that statement looks in its table alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
from engine.ids import IdEntry
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


def _download_branches(
    rt: Runtime, account_id: int, public_id: str, role: str | None
) -> list[sa.Select[Any]]:
    """Three lookups of `public_id`, one per type that can name a file (`_KINDS` order).

    Each carries the account predicate on every table it reads and selects the object's
    internal `key` and parent key (for the id cache) beside the file's columns: the `file`
    itself, an `event_file`'s file, and an `event`'s first file (lowest position, or the
    first with `role`) joined LEFT so an empty event still answers with NULL file columns.
    """
    files, event_files, events = (rt.tables[n] for n in ("file", "event_file", "event"))
    cols = [files.c[name] for name in _FILE_COLUMNS]
    no_parent = sa.null().label("parent_key")

    def branch(kind: int, key: Any, parent: Any) -> sa.Select[Any]:
        return sa.select(
            sa.literal_column(str(kind)).label("kind"), key.label("key"), parent, *cols
        )

    own_file = branch(0, files.c.id, no_parent).where(
        files.c.id_random == public_id, files.c.account_id == account_id
    )
    via_link = (
        branch(1, event_files.c.id, event_files.c.event_id.label("parent_key"))
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
        branch(2, events.c.id, no_parent)
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
    return [own_file, via_link, via_event]


def _download_select(
    rt: Runtime, account_id: int, public_id: str, role: str | None, hint: IdEntry | None = None
) -> sa.Select[Any] | sa.CompoundSelect[Any]:
    """One statement naming which type owns `public_id` and the file it designates: the
    UNION ALL of the three lookups, or only the one the id cache named (`hint`), narrowed
    to the internal key it gave. `kind` is the index of the branch in `_KINDS`."""
    branches = _download_branches(rt, account_id, public_id, role)
    if hint is not None and hint.type in _KINDS:
        table = rt.tables[hint.type]
        return branches[_KINDS.index(hint.type)].where(table.c.id == hint.key)
    return sa.union_all(*branches)


@dataclass
class DownloadLookup:
    """What the statement found, by kind, and whether the id cache's entry led nowhere."""

    by_kind: dict[str, dict[str, Any]]
    stale: bool = False

    def learned(self) -> IdEntry | None:
        """The id cache entry the statement taught (what the id names, as `choose` does)."""
        for kind in _KINDS:
            row = self.by_kind.get(kind)
            if row is not None:
                parent = row["parent_key"]
                return IdEntry(
                    kind,
                    int(row["key"]),
                    "event" if parent is not None else None,
                    None if parent is None else int(parent),
                )
        return None


async def lookup_download(
    conn: AsyncConnection,
    rt: Runtime,
    account_id: int,
    public_id: str,
    role: str | None,
    hint: IdEntry | None = None,
) -> DownloadLookup:
    """One statement (two when `hint` is stale: it then finds nothing and the full lookup
    runs)."""
    stmt = _download_select(rt, account_id, public_id, role, hint)
    rows = (await conn.execute(stmt)).mappings().all()
    if hint is not None and hint.type in _KINDS and not rows:
        found = await lookup_download(conn, rt, account_id, public_id, role)
        return DownloadLookup(found.by_kind, stale=True)
    return DownloadLookup({_KINDS[int(row["kind"])]: dict(row) for row in rows})


def choose(lookup: DownloadLookup, public_id: str, role: str | None) -> Mapping[str, Any]:
    """The `file` row `public_id` designates (SPEC 6.3), or NotFoundError."""
    by_kind = lookup.by_kind
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


async def resolve_download(
    conn: AsyncConnection, rt: Runtime, account_id: int, public_id: str, role: str | None
) -> Mapping[str, Any]:
    """The `file` row `public_id` designates in the account, in one statement."""
    return choose(await lookup_download(conn, rt, account_id, public_id, role), public_id, role)


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
        hint = await rt.ids.get(account_id, public_id)
        lookup = await read_for(
            rt,
            ctx.principal,
            lambda conn: lookup_download(conn, rt, account_id, public_id, role, hint),
        )
        if lookup.stale:
            await rt.ids.was_stale(account_id, public_id)
        if hint is None or lookup.stale:
            learned = lookup.learned()
            if learned is not None:
                await rt.ids.put(account_id, public_id, learned)
        return _send(request, rt, choose(lookup, public_id, role), named=True)
