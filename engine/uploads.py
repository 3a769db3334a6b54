"""Streaming `multipart/form-data` uploads straight into the blob store.

The body is fed chunk by chunk to python-multipart's low-level parser; its callbacks only
record events, which are then applied with `await` (blob writes) before the next chunk is
read, so memory holds at most one incoming chunk. File parts (form name `file`) each become
a blob; other parts are small text fields. On any failure the sink is asked to discard the
blobs this call created (it deletes those no row references).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from engine.blobs import BlobWriter, StoredBlob
from engine.errors import (
    BadRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from engine.filenames import sanitize_filename
from engine.mime import HEAD_BYTES, detect_mime

__all__ = ["FILE_FIELD", "UploadResult", "UploadedFile", "discard_new_blobs", "receive_upload"]

FILE_FIELD = "file"
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 4096
# Cleanup tasks that must outlive a cancelled request; held here so they are not collected.
_CLEANUPS: set[asyncio.Task[None]] = set()


class BlobSink(Protocol):
    """Where upload parts go: the blob store, or a sink that only hashes (idempotent replays).

    `discard` gets the blobs an upload created and no longer needs. The same bytes may be
    in flight in another upload that found the blob present and committed a row naming it,
    so a sink over a shared store deletes only what it knows to be unreferenced.
    """

    async def open_writer(self, *, max_bytes: int | None = None) -> BlobWriter: ...

    async def discard(self, sha256s: Sequence[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One stored file part. `created` must not reach the client (it would reveal whether
    another account already holds these bytes); it is for `discard_new_blobs`."""

    filename: str
    sha256: str
    size: int
    created: bool
    mime_type: str


@dataclass(frozen=True, slots=True)
class UploadResult:
    files: tuple[UploadedFile, ...]
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Part:
    name: str
    filename: str | None
    is_file: bool
    data: bytearray = field(default_factory=bytearray)  # fields only, capped
    head: bytearray = field(default_factory=bytearray)  # files: first HEAD_BYTES
    writer: BlobWriter | None = None


class _Receiver:
    """Parser callbacks (synchronous) record events; `drain` applies them (async)."""

    def __init__(self, store: BlobSink, max_files: int, max_fields: int, field_bytes: int):
        self.store = store
        self.max_files = max_files
        self.max_fields = max_fields
        self.max_field_bytes = field_bytes
        self.events: list[tuple[str, _Part, bytes]] = []
        self.part: _Part | None = None
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.disposition: bytes | None = None
        self.header_count = 0
        self.file_count = 0
        self.field_count = 0
        self.files: list[UploadedFile] = []
        self.fields: dict[str, str] = {}
        self.field_names: set[str] = set()
        self.open_writers: list[BlobWriter] = []
        self.stored: list[StoredBlob] = []

    # -- parser callbacks -------------------------------------------------------------
    def on_part_begin(self) -> None:
        self.part, self.disposition, self.header_count = None, None, 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]
        if len(self.header_value) > MAX_PART_HEADER_BYTES:
            raise BadRequestError("A multipart part header is too long")

    def on_header_end(self) -> None:
        self.header_count += 1
        if self.header_count > MAX_PART_HEADERS:
            raise BadRequestError("A multipart part has too many headers")
        if bytes(self.header_name).strip().lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        try:
            kind, options = parse_options_header(self.disposition)
        except (ValueError, UnicodeError):
            kind, options = b"", {}
        if kind != b"form-data" or b"name" not in options:
            raise BadRequestError('Each multipart part needs "Content-Disposition: form-data"')
        name = options[b"name"].decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        filename = None if raw_filename is None else raw_filename.decode("utf-8", "replace")
        part = _Part(name=name, filename=filename, is_file=name == FILE_FIELD)
        if part.is_file:
            self.file_count += 1
            if self.file_count > self.max_files:
                raise PayloadTooLargeError(f"Too many files: at most {self.max_files}")
        else:
            self.field_count += 1
            if self.field_count > self.max_fields:
                raise PayloadTooLargeError(f"Too many form fields: at most {self.max_fields}")
            if filename is not None:
                raise ValidationError.single(name, f"only {FILE_FIELD!r} parts may carry a file")
            if name in self.field_names:
                raise ValidationError.single(name, "given more than once")
            self.field_names.add(name)
        self.part = part
        self.events.append(("begin", part, b""))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part is None:
            return
        chunk = data[start:end]
        if part.is_file:
            if len(part.head) < HEAD_BYTES:
                part.head += chunk[: HEAD_BYTES - len(part.head)]
            self.events.append(("data", part, chunk))
        else:
            part.data += chunk
            if len(part.data) > self.max_field_bytes:
                raise PayloadTooLargeError(
                    f"Form field {part.name!r} is larger than {self.max_field_bytes} bytes"
                )

    def on_part_end(self) -> None:
        if self.part is not None:
            self.events.append(("end", self.part, b""))
        self.part = None

    # -- applying events --------------------------------------------------------------
    async def drain(self) -> None:
        events, self.events = self.events, []
        for kind, part, chunk in events:
            if kind == "begin" and part.is_file:
                part.writer = await self.store.open_writer()
                self.open_writers.append(part.writer)
            elif kind == "data" and part.writer is not None:
                await part.writer.write(chunk)
            elif kind == "end":
                await self._finish(part)

    async def _finish(self, part: _Part) -> None:
        if not part.is_file:
            try:
                self.fields[part.name] = bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationError.single(part.name, "is not valid UTF-8") from None
            return
        writer = part.writer
        assert writer is not None  # set on "begin" for every file part
        if part.filename == "" and writer.size == 0:
            # A browser form with no file chosen sends an empty part with filename="".
            await writer.abort()
            self.open_writers.remove(writer)
            return
        blob = await writer.commit()
        self.open_writers.remove(writer)
        self.stored.append(blob)
        name = sanitize_filename(part.filename)
        self.files.append(
            UploadedFile(
                filename=name,
                sha256=blob.sha256,
                size=blob.size,
                created=blob.created,
                mime_type=detect_mime(bytes(part.head), name),
            )
        )

    async def cleanup(self) -> None:
        for writer in self.open_writers:
            await writer.abort()
        self.open_writers.clear()
        await self.store.discard(_created(b.sha256 for b in self.stored if b.created))


def _created(hashes: Iterable[str]) -> list[str]:
    return sorted(set(hashes))


async def _run_cleanup(receiver: _Receiver) -> None:
    # Shielded so it completes even while the request task is being cancelled.
    task = asyncio.ensure_future(receiver.cleanup())
    _CLEANUPS.add(task)
    task.add_done_callback(_CLEANUPS.discard)
    await asyncio.shield(task)


def _boundary(content_type: str) -> bytes:
    try:
        kind, options = parse_options_header(content_type)
    except (ValueError, UnicodeError):
        kind, options = b"", {}
    if kind != b"multipart/form-data":
        raise UnsupportedMediaTypeError("Uploads must be sent as multipart/form-data")
    boundary = options.get(b"boundary", b"")
    # RFC 2046: 1-70 characters; longer ones are refused before any parsing work.
    if not 1 <= len(boundary) <= 70:
        raise UnsupportedMediaTypeError("multipart/form-data needs a boundary of 1-70 characters")
    return boundary


async def receive_upload(
    stream: AsyncIterator[bytes],
    content_type: str,
    store: BlobSink,
    *,
    max_bytes: int,
    max_files: int = 20,
    max_fields: int = 10,
    max_field_bytes: int = 64 * 1024,
) -> UploadResult:
    """Parse a multipart body from `stream`, storing each `file` part as a blob.

    Errors: not multipart or no boundary 415; body over `max_bytes`, too many parts or a
    field over `max_field_bytes` 413; malformed or truncated multipart 400; no file part
    422 at path `file`. On any failure, client disconnect and cancellation included, every
    temp file is removed and the blobs this call created are handed to `store.discard`
    before the error propagates.
    """
    boundary = _boundary(content_type)
    receiver = _Receiver(store, max_files, max_fields, max_field_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": receiver.on_part_begin,
            "on_part_data": receiver.on_part_data,
            "on_part_end": receiver.on_part_end,
            "on_header_field": receiver.on_header_field,
            "on_header_value": receiver.on_header_value,
            "on_header_end": receiver.on_header_end,
            "on_headers_finished": receiver.on_headers_finished,
        },
    )
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLargeError(f"The upload is larger than {max_bytes} bytes")
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise BadRequestError("Malformed multipart body") from exc
            await receiver.drain()
        if parser.state != MultipartState.END:
            raise BadRequestError("The multipart body ends before its closing boundary")
        if not receiver.files:
            raise ValidationError.single(FILE_FIELD, "at least one file part is required")
    except BaseException:
        await _run_cleanup(receiver)
        raise
    return UploadResult(files=tuple(receiver.files), fields=receiver.fields)


async def discard_new_blobs(store: BlobSink, result: UploadResult) -> None:
    """Hand the blobs `result` created to `store.discard`, for a caller whose later
    transaction failed (the sink keeps those a committed row names)."""
    await store.discard(_created(f.sha256 for f in result.files if f.created))
