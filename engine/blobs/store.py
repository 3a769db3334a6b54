"""The blob store interface: what callers (uploads, downloads, GC) may ask of any store.

A store keeps bytes addressed only by their SHA-256, never by a client-given name. The
local `FileSystemBlobStore` and the `S3BlobStore` (`engine.blobs.s3`) implement it;
`create_blob_store(settings)` picks one: `AE_BLOB_URL` when set, else `AE_BLOB_DIR`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "CHUNK_SIZE",
    "BlobInfo",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "StoredBlob",
    "TempFileInfo",
    "is_sha256",
]

CHUNK_SIZE = 256 * 1024
"""Bytes per disk read and per buffered disk write (one worker-thread hop each)."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: object) -> bool:
    """True for exactly 64 lowercase hex digits, the only form a blob name may take."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob that is now in the store. `created` is False when the bytes were already there,
    so a caller whose transaction fails deletes only what it added."""

    sha256: str
    size: int
    created: bool


@dataclass(frozen=True, slots=True)
class BlobInfo:
    sha256: str
    mtime: float


@dataclass(frozen=True, slots=True)
class TempFileInfo:
    name: str
    mtime: float


class BlobWriter(Protocol):
    """One blob being written. Either `commit` or `abort` ends it; `abort` is idempotent.

    Over the writer's `max_bytes`, `write` raises PayloadTooLargeError; a full store raises
    InsufficientStorageError. Either way the partial blob is already gone.
    """

    @property
    def size(self) -> int: ...

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> StoredBlob: ...

    async def abort(self) -> None: ...


class BlobReader(Protocol):
    """Chunks of one opened blob range; `aclose` releases it even when never iterated."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


class BlobStore(Protocol):
    """Where uploaded bytes live, addressed only by their SHA-256 (never by a client name).

    A malformed sha256 is treated as absent: `open`/`size` raise NotFoundError, `exists` and
    `delete` answer False. `open` takes an inclusive byte range, as HTTP does. `put` streams
    chunks through `open_writer` and removes the partial blob on any failure. The temp-file
    methods exist for garbage collection of uploads that died half way.

    A store carries one id, recorded at first use, which binds it to the database whose
    rows reference its blobs (`engine.blob_binding`): `read_store_id` answers None until
    then, and `claim_store_id` records an id unless one is already there, atomically, and
    returns the one that won. `location` names the store in messages.
    """

    @property
    def location(self) -> str: ...

    async def read_store_id(self) -> str | None: ...

    async def claim_store_id(self, store_id: str) -> str: ...

    async def open_writer(self, *, max_bytes: int | None = None) -> BlobWriter: ...

    async def put(
        self, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredBlob: ...

    async def open(self, sha256: str, start: int = 0, end: int | None = None) -> BlobReader: ...

    async def size(self, sha256: str) -> int: ...

    async def exists(self, sha256: str) -> bool: ...

    async def delete(self, sha256: str) -> bool: ...

    def iter_blobs(self) -> AsyncIterator[BlobInfo]: ...

    def iter_temp_files(self) -> AsyncIterator[TempFileInfo]: ...

    async def remove_temp_file(self, name: str) -> bool: ...

    async def close(self) -> None:
        """Release connections (a no-op for the file-system store)."""


async def put_through_writer(
    store: BlobStore, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
) -> StoredBlob:
    """`BlobStore.put` of every store: stream `chunks` through `open_writer`, and abort the
    writer (its partial blob removed) on any failure, cancellation included."""
    writer = await store.open_writer(max_bytes=max_bytes)
    try:
        async for chunk in chunks:
            await writer.write(chunk)
        return await writer.commit()
    except BaseException:
        await writer.abort()
        raise
