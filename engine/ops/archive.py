"""What backups and exports share: errors, manifests, per-table checksums and tar members.

An archive is a plain tar whose first member is `manifest.json`; the others are named in
it with their sizes and SHA-256 hashes, so a reader checks each member as it streams by.
Blobs are stored as `blobs/<sha256>`; the name is the content's hash, checked on the way in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import os
import tarfile
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.blobs import CHUNK_SIZE, BlobReader, BlobStore, is_sha256

MANIFEST = "manifest.json"
BLOB_PREFIX = "blobs/"


class OpsError(Exception):
    """A backup, restore, export or import that cannot go on; the message says why."""


class TableSummary(msgspec.Struct, frozen=True):
    """A table's row count and the SHA-256 of its rows in primary-key order."""

    rows: int
    sha256: str


class Member(msgspec.Struct, frozen=True):
    name: str
    size: int
    sha256: str


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def archive_path(directory: Path, kind: str) -> Path:
    """A new archive's path in `directory`: `aether-<kind>-<time>.tar`, numbered when taken."""
    stamp = utc_stamp()
    path = directory / f"aether-{kind}-{stamp}.tar"
    number = 1
    while path.exists():
        number += 1
        path = directory / f"aether-{kind}-{stamp}-{number}.tar"
    return path


def utc_stamp(now: dt.datetime | None = None) -> str:
    """`20261205T233000Z`: a file-name-safe UTC timestamp."""
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")


def blob_member(sha256: str) -> str:
    return BLOB_PREFIX + sha256


def sha_of_member(name: str) -> str | None:
    """The hash a `blobs/<sha256>` member name carries, None for any other name."""
    sha = name.removeprefix(BLOB_PREFIX)
    return sha if name.startswith(BLOB_PREFIX) and is_sha256(sha) else None


# -- per-table checksums ----------------------------------------------------------------------


_ROW_ENCODER = msgspec.json.Encoder(order="sorted")


def _plain(value: Any) -> Any:
    """A JSON-encodable form of a driver value, the same on a dump and its restore."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _table_shapes(conn: sa.Connection) -> list[tuple[str, list[str], list[str]]]:
    """(name, columns, primary key columns) for every table, by name."""
    inspector = sa.inspect(conn)
    shapes = []
    for name in sorted(inspector.get_table_names()):
        columns = [c["name"] for c in inspector.get_columns(name)]
        keys = inspector.get_pk_constraint(name).get("constrained_columns") or columns
        shapes.append((name, columns, list(keys)))
    return shapes


async def table_inventory(conn: AsyncConnection) -> dict[str, TableSummary]:
    """Every table of the database `conn` sees: rows and a checksum of their values.

    Read inside `conn`'s transaction, so on a snapshot it describes exactly that snapshot.
    Values are compared as the driver returns them, so compare on one kind of database.
    """
    found: dict[str, TableSummary] = {}
    for name, columns, keys in await conn.run_sync(_table_shapes):
        table = sa.table(name, *(sa.column(c) for c in columns))
        query = sa.select(*table.c).order_by(*(table.c[k] for k in keys))
        digest = hashlib.sha256()
        rows = 0
        result = await conn.stream(query.execution_options(yield_per=1000))
        async for row in result:
            digest.update(_ROW_ENCODER.encode([_plain(v) for v in row]))
            digest.update(b"\n")
            rows += 1
        found[name] = TableSummary(rows=rows, sha256=digest.hexdigest())
    return found


def describe_differences(
    expected: dict[str, TableSummary], found: dict[str, TableSummary]
) -> list[str]:
    """One line per table whose rows differ between `expected` and `found`."""
    lines = []
    for name in sorted(set(expected) | set(found)):
        want, got = expected.get(name), found.get(name)
        if want == got:
            continue
        if want is None or got is None:
            lines.append(f"table {name}: {'missing' if got is None else 'not in the archive'}")
        elif want.rows != got.rows:
            lines.append(f"table {name}: {got.rows} rows, the archive has {want.rows}")
        else:
            lines.append(f"table {name}: same row count, different values")
    return lines


# -- tar members ----------------------------------------------------------------------------


def tar_info(name: str, size: int, mtime: float | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(dt.datetime.now(dt.UTC).timestamp() if mtime is None else mtime)
    return info


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(tar_info(name, len(data)), io.BytesIO(data))


class HashingReader(io.RawIOBase):
    """Reads `source` through, hashing and counting what passes; `advance` sees each chunk."""

    def __init__(
        self, source: IO[bytes] | io.RawIOBase, advance: Callable[[int], None] | None = None
    ) -> None:
        self._source = source
        self._advance = advance
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size) or b""
        self.hash.update(data)
        self.size += len(data)
        if self._advance is not None and data:
            self._advance(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class BlobFile(io.RawIOBase):
    """A blocking file over a store's async blob reader, for tar writing in a worker thread.

    Each read hops to the event loop (`loop`) for the next chunk and waits for it there.
    """

    def __init__(self, reader: BlobReader, loop: asyncio.AbstractEventLoop) -> None:
        self._reader = reader
        self._loop = loop
        self._pending = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes:
        async def step() -> bytes:
            try:
                return await self._reader.__anext__()
            except StopAsyncIteration:
                return b""

        return asyncio.run_coroutine_threadsafe(step(), self._loop).result()

    def read(self, size: int = -1) -> bytes:
        while not self._ended and (size < 0 or len(self._pending) < size):
            chunk = self._next_chunk()
            if not chunk:
                self._ended = True
            self._pending += chunk
        if size < 0:
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


async def read_member_chunks(
    source: IO[bytes], advance: Callable[[int], None]
) -> AsyncIterator[bytes]:
    """The bytes of an extracted tar member, read in a worker thread chunk by chunk."""
    while True:
        chunk = await asyncio.to_thread(source.read, CHUNK_SIZE)
        if not chunk:
            return
        advance(len(chunk))
        yield chunk


async def put_blob(store: BlobStore, sha256: str, size: int, chunks: AsyncIterator[bytes]) -> bool:
    """Store one archived blob and check it is what its name says; True if it was new."""
    stored = await store.put(chunks)
    if stored.sha256 != sha256 or stored.size != size:
        if stored.created:
            await store.delete(stored.sha256)
        raise OpsError(f"blob {sha256} in the archive is damaged (its content hashes otherwise)")
    return stored.created


async def in_thread_with_loop(work: Callable[[asyncio.AbstractEventLoop], Any]) -> Any:
    """Run blocking `work(loop)` in a thread; it may hop back to `loop` (see BlobFile)."""
    loop = asyncio.get_running_loop()
    return await asyncio.to_thread(work, loop)


def write_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temp)` beside `target`, then rename: the archive appears whole or not."""
    temp = target.with_name(f".{target.name}.part")
    try:
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # secret: 0600
        write(temp)
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target
