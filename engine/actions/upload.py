"""`POST /v3/action/event/{event_id}/upload` (SPEC 6.1): files into an event, all or nothing.

The body is streamed into the blob store by `receive_upload`; then one transaction finds or
inserts the account's `file` row per distinct content and one `event_file` row per part.
Any failure after the blobs are written discards the blobs this request created that no
committed row names (another upload of the same bytes may have committed one meanwhile).
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
from engine.blob_binding import require_bound_store
from engine.blobs import BlobWriter
from engine.errors import ForbiddenError, NotFoundError, ValidationError
from engine.filenames import sanitize_filename
from engine.idempotency import HashOnlySink, Idempotency, upload_fingerprint
from engine.plans import PK_LABEL
from engine.realtime.writes import note_write
from engine.repository import fetch_all, read, transaction
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

    async def work(conn: AsyncConnection) -> Any:
        return (await conn.execute(stmt)).scalar()

    pk = await read(rt.reader, work)
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
) -> tuple[int, bool]:
    """The account's `file` row for `upload`'s content, made when absent (race-safe), and
    whether this call made it."""
    pk = await _file_pk(conn, table, account_id, upload.sha256, locking=False)
    if pk is not None:
        return pk, False
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
        async with conn.begin_nested():  # real on SQLite too (the engine emits BEGIN)
            result = await conn.execute(insert)
    except sa_exc.IntegrityError:
        # A concurrent upload of the same bytes won; its row is the one to use.
        pk = await _file_pk(conn, table, account_id, upload.sha256, locking=True)
        if pk is None:
            raise
        return pk, False
    return _new_pk(result), True


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
    rt: Runtime,
    account_id: int,
    event_pk: int,
    upload: UploadResult,
    meta: list[FileMeta],
    *,
    account: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The one transaction of an upload; returns the response body. The rows it makes are
    noted for the change feed of `account` (the account's public id)."""
    file_table, ef_table = rt.tables["file"], rt.tables["event_file"]
    async with transaction(rt.engine) as conn:
        by_hash: dict[str, int] = {}
        made: set[int] = set()
        for part in upload.files:
            if part.sha256 not in by_hash:
                pk, created = await find_or_insert_file(conn, file_table, account_id, part)
                by_hash[part.sha256] = pk
                if created:
                    made.add(pk)
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
        files = await _read(conn, rt, account_id, "file", list(by_hash.values()))
        event_files = await _read(conn, rt, account_id, "event_file", ef_pks)
        for pk, item in zip(by_hash.values(), files, strict=True):
            if pk in made:
                note_write(conn, rt.plans["file"], account, "create", item)
        for item in event_files:
            note_write(conn, rt.plans["event_file"], account, "create", item)
    return {"files": files, "event_files": event_files}


async def _read(
    conn: AsyncConnection, rt: Runtime, account_id: int, type_name: str, pks: list[int]
) -> list[dict[str, Any]]:
    plan = rt.plans[type_name]
    stmt = plan.scoped(plan.select().where(plan.pk.in_(pks)), account_id)
    if conn.dialect.name in ("mysql", "mariadb"):
        # A `file` row another upload committed after this transaction's first read is not
        # in the InnoDB snapshot; a locking read sees it.
        stmt = stmt.with_for_update(read=True)
    found = await fetch_all(conn, stmt)
    by_pk = {row[PK_LABEL]: public_row(row) for row in found}
    return [by_pk[pk] for pk in pks]


async def discard_unreferenced(rt: Runtime, sha256s: Sequence[str]) -> None:
    """Delete those of `sha256s` (blobs a failed upload created) that no `file` row names.

    A concurrent upload of the same bytes, in any account, finds the blob already present
    (created=False) and may commit its row while this one fails, so the question is asked
    of the whole `file` table: this is the one read not scoped to the caller's account (it
    reads hashes only, and answers nothing to the client). A blob is deleted only when the
    database has answered; when it cannot (down, pool timeout), every blob stays and
    `aether gc-blobs` removes the unreferenced ones after its grace period.
    """
    wanted = sorted(set(sha256s))
    if not wanted:
        return
    file = rt.tables["file"]
    try:
        async with rt.engine.connect() as conn:
            found = await conn.execute(
                sa.select(file.c.sha256).where(file.c.sha256.in_(wanted)).distinct()
            )
            referenced = set(found.scalars())
    except Exception:
        logger.warning(
            "kept %d new blob(s): the database could not say whether a row references them",
            len(wanted),
            exc_info=True,
        )
        return
    for sha256 in wanted:
        if sha256 not in referenced:
            await rt.blobs.delete(sha256)


class CheckedSink:
    """The upload's `BlobSink`: parts go to the blob store, and `discard` deletes only the
    blobs the database says no row references (see `discard_unreferenced`)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    async def open_writer(self, *, max_bytes: int | None = None) -> BlobWriter:
        return await self._rt.blobs.open_writer(max_bytes=max_bytes)

    async def discard(self, sha256s: Sequence[str]) -> None:
        await discard_unreferenced(self._rt, sha256s)


async def _discard(sink: CheckedSink, upload: UploadResult) -> None:
    # Shielded so the blobs go even while the request task is being cancelled.
    task = asyncio.ensure_future(discard_new_blobs(sink, upload))
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
        await require_bound_store(rt)
        if idem is not None:
            replay = await idem.begin()
            if replay is not None:  # parse the retry without storing it, then compare
                retried = await receive_upload(
                    request.stream(), content_type, HashOnlySink(), max_bytes=limit
                )
                replay.check(upload_fingerprint(retried))
                return json_response(replay.body, status=replay.status)
        sink = CheckedSink(rt)
        try:
            upload = await receive_upload(request.stream(), content_type, sink, max_bytes=limit)
            try:
                meta = parse_meta(upload.fields.get(META_FIELD), len(upload.files))
                body = await write_rows(
                    rt, account_id, event_pk, upload, meta,
                    account=ctx.principal.account_public_id,
                )  # fmt: skip
            except BaseException:
                await _discard(sink, upload)
                raise
            if idem is not None:
                await idem.save(upload_fingerprint(upload), 201, body)
        finally:
            if idem is not None:
                await idem.release()
        ctx.logger.info("uploaded %d file part(s) to an event", len(upload.files))
        return json_response(body, status=201)
