"""`POST /v3/action/event/{event_id}/upload` (SPEC 6.1): files into an event, all or nothing.

The body is streamed into the blob store by `receive_upload`; then one transaction finds or
inserts the account's `file` row per distinct content and one `event_file` row per part.
Any failure after the blobs are written discards the blobs this request created.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from engine.actions import specs
from engine.actions.base import ActionContext
from engine.errors import ForbiddenError, NotFoundError, ValidationError
from engine.filenames import sanitize_filename
from engine.idempotency import HashOnlySink, Idempotency, upload_fingerprint
from engine.plans import PK_LABEL
from engine.repository import fetch_all, transaction
from engine.responses import json_response, public_row
from engine.runtime import Runtime
from engine.uploads import UploadedFile, UploadResult, discard_new_blobs, receive_upload
from models.base import new_public_id, utcnow
from models.events import EventFileRole

logger = logging.getLogger(__name__)

META_FIELD = "meta"
Role = EventFileRole
_DISCARDS: set[asyncio.Task[None]] = set()


class FileMeta(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: Role = "attachment"
    title: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    position: Annotated[int, msgspec.Meta(ge=-2_147_483_648, le=2_147_483_647)] = 0


_META = msgspec.json.Decoder(FileMeta | list[FileMeta])


def parse_meta(text: str | None, count: int) -> list[FileMeta]:
    """One FileMeta per file part; 422 at `meta...` for anything invalid."""
    if text is None or not text.strip():
        return [FileMeta() for _ in range(count)]
    try:
        meta: FileMeta | list[FileMeta] = _META.decode(text)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).partition(" - at `$")
        raise ValidationError.single(META_FIELD + at.rstrip("`"), message) from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ValidationError.single(META_FIELD, "must be a JSON object or array") from exc
    if isinstance(meta, FileMeta):
        return [meta] * count
    if len(meta) != count:
        raise ValidationError.single(
            META_FIELD, f"has {len(meta)} entries for {count} file part(s)"
        )
    return meta


async def find_event(rt: Runtime, account_id: int, event_id: str) -> int:
    events = rt.tables["event"]
    stmt = sa.select(events.c.id).where(
        events.c.id_random == event_id, events.c.account_id == account_id
    )
    async with transaction(rt.engine) as conn:
        pk = (await conn.execute(stmt)).scalar()
    if pk is None:
        raise NotFoundError(f"No event {event_id!r}")
    return int(pk)


async def _file_pk(
    conn: AsyncConnection, table: sa.Table, account_id: int, sha256: str, *, locking: bool
) -> int | None:
    stmt = sa.select(table.c.id).where(table.c.account_id == account_id, table.c.sha256 == sha256)
    if locking:
        # A locking read sees rows committed after this transaction's snapshot (InnoDB).
        stmt = stmt.with_for_update(read=True)
    pk = (await conn.execute(stmt)).scalar()
    return None if pk is None else int(pk)


def _new_pk(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def find_or_insert_file(
    conn: AsyncConnection, table: sa.Table, account_id: int, upload: UploadedFile
) -> int:
    """The account's `file` row for `upload`'s content, made when absent (race-safe)."""
    pk = await _file_pk(conn, table, account_id, upload.sha256, locking=False)
    if pk is not None:
        return pk
    now = utcnow()
    values = {
        "id_random": new_public_id(),
        "account_id": account_id,
        "name": sanitize_filename(upload.filename),
        "sha256": upload.sha256,
        "size": upload.size,
        "mime_type": upload.mime_type,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    insert = sa.insert(table).values(**values)
    try:
        if conn.dialect.name == "sqlite":
            # pysqlite's legacy transaction handling turns a SAVEPOINT into the outer
            # transaction (RELEASE would commit it); SQLite rolls back only the failing
            # statement on a constraint error, so no savepoint is needed there.
            result = await conn.execute(insert)
        else:
            async with conn.begin_nested():
                result = await conn.execute(insert)
    except sa_exc.IntegrityError:
        # A concurrent upload of the same bytes won; its row is the one to use.
        pk = await _file_pk(conn, table, account_id, upload.sha256, locking=True)
        if pk is None:
            raise
        return pk
    return _new_pk(result)


async def insert_event_files(
    conn: AsyncConnection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
) -> list[int]:
    pks: list[int] = []
    for values in rows:
        result = await conn.execute(sa.insert(table).values(**values))
        pks.append(_new_pk(result))
    return pks


async def write_rows(
    rt: Runtime, account_id: int, event_pk: int, upload: UploadResult, meta: list[FileMeta]
) -> dict[str, list[dict[str, Any]]]:
    """The one transaction of an upload; returns the response body."""
    file_table, ef_table = rt.tables["file"], rt.tables["event_file"]
    async with transaction(rt.engine) as conn:
        by_hash: dict[str, int] = {}
        for part in upload.files:
            if part.sha256 not in by_hash:
                by_hash[part.sha256] = await find_or_insert_file(conn, file_table, account_id, part)
        now = utcnow()
        rows = [
            {
                "id_random": new_public_id(),
                "account_id": account_id,
                "event_id": event_pk,
                "file_id": by_hash[part.sha256],
                "role": m.role,
                "title": m.title,
                "position": m.position,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            for part, m in zip(upload.files, meta, strict=True)
        ]
        ef_pks = await insert_event_files(conn, ef_table, rows)
        files = await _read(conn, rt, "file", list(by_hash.values()))
        event_files = await _read(conn, rt, "event_file", ef_pks)
    return {"files": files, "event_files": event_files}


async def _read(
    conn: AsyncConnection, rt: Runtime, type_name: str, pks: list[int]
) -> list[dict[str, Any]]:
    plan = rt.plans[type_name]
    stmt = plan.select().where(plan.pk.in_(pks))
    if conn.dialect.name in ("mysql", "mariadb"):
        # A `file` row another upload committed after this transaction's first read is not
        # in the InnoDB snapshot; a locking read sees it.
        stmt = stmt.with_for_update(read=True)
    found = await fetch_all(conn, stmt)
    by_pk = {row[PK_LABEL]: public_row(row) for row in found}
    return [by_pk[pk] for pk in pks]


async def discard_unreferenced(rt: Runtime, upload: UploadResult) -> None:
    """Delete the blobs this upload created, unless a committed `file` row now names them.

    A concurrent upload of the same bytes finds the blob already present (created=False)
    and may commit its row while this one fails: re-reading the rows just before deleting
    keeps that blob. If the database cannot answer, nothing can have committed a new row
    either, so the created blobs go.
    """
    created = {f.sha256 for f in upload.files if f.created}
    if not created:
        return
    file = rt.tables["file"]
    referenced: set[str] = set()
    try:
        async with rt.engine.connect() as conn:
            found = await conn.execute(
                sa.select(file.c.sha256).where(file.c.sha256.in_(sorted(created))).distinct()
            )
            referenced = set(found.scalars())
    except Exception:  # the database is down: no other upload committed a row meanwhile
        logger.warning("could not re-check blob references before discarding", exc_info=True)
    kept = UploadResult(
        files=tuple(f for f in upload.files if f.sha256 not in referenced), fields=upload.fields
    )
    await discard_new_blobs(rt.blobs, kept)


async def _discard(rt: Runtime, upload: UploadResult) -> None:
    # Shielded so the blobs go even while the request task is being cancelled.
    task = asyncio.ensure_future(discard_unreferenced(rt, upload))
    _DISCARDS.add(task)
    task.add_done_callback(_DISCARDS.discard)
    await asyncio.shield(task)


class UploadToEvent:
    method = "POST"
    path = "/event/{event_id}/upload"
    min_role = "editor"
    openapi: Any = specs.UPLOAD

    async def handle(self, ctx: ActionContext, request: Request) -> Response:
        account_id = ctx.principal.account_id
        if account_id is None:
            raise ForbiddenError("Uploads belong to an account; a system key cannot upload")
        rt = ctx.runtime
        event_pk = await find_event(rt, account_id, str(request.path_params["event_id"]))
        route = f"POST {request.url.path}"
        idem = Idempotency.from_request(rt.cache, ctx.principal, request, route)
        content_type = request.headers.get("content-type", "")
        limit = rt.settings.upload_max_bytes
        if idem is not None:
            replay = await idem.begin()
            if replay is not None:  # parse the retry without storing it, then compare
                retried = await receive_upload(
                    request.stream(), content_type, HashOnlySink(), max_bytes=limit
                )
                replay.check(upload_fingerprint(retried))
                return json_response(replay.body, status=replay.status)
        try:
            upload = await receive_upload(request.stream(), content_type, rt.blobs, max_bytes=limit)
            try:
                meta = parse_meta(upload.fields.get(META_FIELD), len(upload.files))
                body = await write_rows(rt, account_id, event_pk, upload, meta)
            except BaseException:
                await _discard(rt, upload)
                raise
            if idem is not None:
                await idem.save(upload_fingerprint(upload), 201, body)
        finally:
            if idem is not None:
                await idem.release()
        ctx.logger.info("uploaded %d file part(s) to an event", len(upload.files))
        return json_response(body, status=201)
