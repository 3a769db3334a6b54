"""Content-addressed blob store: bytes in, SHA-256 out, and ranged reads back.

Writes stream into a temp file in the store's own directory while hashing, then fsync and
atomically link to `ab/cd/<sha256>`; a blob that already exists is never written twice.
`BlobStore` is the protocol callers use (an S3 store can implement it); `FileSystemBlobStore`
is the local implementation. Disk I/O runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import os
import re
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from engine.errors import InsufficientStorageError, NotFoundError, PayloadTooLargeError

__all__ = [
    "CHUNK_SIZE",
    "BlobInfo",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "FileSystemBlobStore",
    "StoredBlob",
    "TempFileInfo",
    "is_sha256",
]

CHUNK_SIZE = 256 * 1024
"""Bytes per disk read and per buffered disk write (one worker-thread hop each)."""

TEMP_DIR = ".tmp"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_T = TypeVar("_T")


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
    """One blob being written. Either `commit` or `abort` ends it; `abort` is idempotent."""

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
    `delete` answer False.
    """

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


async def _in_thread(func: Callable[[], _T]) -> _T:
    return await asyncio.to_thread(func)


async def _shielded(func: Callable[[], None]) -> None:
    # Cleanup must finish even when the caller is being cancelled (client disconnect):
    # the shielded thread call runs to completion while the cancellation propagates.
    await asyncio.shield(asyncio.to_thread(func))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileWriter:
    """Streams into `<root>/.tmp/<uuid>.part`, hashing in the same worker-thread hop."""

    def __init__(self, store: FileSystemBlobStore, max_bytes: int | None) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._temp = store.root / TEMP_DIR / f"{uuid.uuid4().hex}.part"
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._size = 0
        self._done = False
        # Serialises thread work on the file, so an abort waits for an in-flight write.
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def _open_sync(self) -> None:
        self._temp.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=0)

    async def start(self) -> None:
        await self._guard(self._open_sync)

    async def write(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("blob writer already finished")
        self._size += len(data)
        if self._max_bytes is not None and self._size > self._max_bytes:
            await self.abort()
            raise PayloadTooLargeError(f"Content is larger than {self._max_bytes} bytes")
        self._buffer += data
        if len(self._buffer) >= CHUNK_SIZE:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        chunk, self._buffer = bytes(self._buffer), bytearray()
        await self._guard(lambda: self._write_sync(chunk))

    def _write_sync(self, chunk: bytes) -> None:
        with self._lock:
            assert self._file is not None  # opened in start(), closed only by commit/abort
            self._hash.update(chunk)
            self._file.write(chunk)

    async def _guard(self, func: Callable[[], None]) -> None:
        """Run disk work in a thread; on any failure remove the temp file and map ENOSPC."""
        try:
            await _in_thread(func)
        except BaseException as exc:
            await self.abort()
            if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
                raise InsufficientStorageError("The blob store is out of space") from exc
            raise

    async def commit(self) -> StoredBlob:
        if self._done:
            raise RuntimeError("blob writer already finished")
        await self._flush()
        result: list[StoredBlob] = []
        await self._guard(lambda: result.append(self._commit_sync()))
        self._done = True
        return result[0]

    def _commit_sync(self) -> StoredBlob:
        with self._lock:
            assert self._file is not None
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            sha256 = self._hash.hexdigest()
            final = self._store.path_for(sha256)
            created_dirs = not final.parent.is_dir()
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                # link() fails if the name exists, so exactly one of two racing writers of
                # the same bytes reports created=True (os.replace would let both claim it).
                os.link(self._temp, final)
                created = True
            except FileExistsError:
                created = False
                # Refresh mtime so a concurrent GC's grace period protects the blob that
                # this upload is about to reference.
                with contextlib.suppress(OSError):
                    os.utime(final)
            self._temp.unlink()
            if created:
                _fsync_dir(final.parent)
                if created_dirs:
                    _fsync_dir(final.parent.parent)
                    _fsync_dir(self._store.root)
            return StoredBlob(sha256=sha256, size=self._size, created=created)

    def _abort_sync(self) -> None:
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
            with contextlib.suppress(FileNotFoundError):
                self._temp.unlink()

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        await _shielded(self._abort_sync)


class _FileReader:
    """Reads `[start, end]` (inclusive) of an open blob in CHUNK_SIZE pieces."""

    def __init__(self, file: BinaryIO, remaining: int) -> None:
        self._file: BinaryIO | None = file
        self._remaining = remaining
        self._lock = threading.Lock()

    def __aiter__(self) -> _FileReader:
        return self

    def _read_sync(self, n: int) -> bytes:
        with self._lock:
            if self._file is None:
                return b""
            return self._file.read(n)

    async def __anext__(self) -> bytes:
        if self._remaining <= 0 or self._file is None:
            await self.aclose()
            raise StopAsyncIteration
        data = await _in_thread(lambda: self._read_sync(min(CHUNK_SIZE, self._remaining)))
        if not data:  # the file shrank under us; end rather than spin
            await self.aclose()
            raise StopAsyncIteration
        self._remaining -= len(data)
        return data

    def _close_sync(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    async def aclose(self) -> None:
        if self._file is not None:
            await _shielded(self._close_sync)


class FileSystemBlobStore:
    """Blobs under `root/ab/cd/<sha256>`, temp files under `root/.tmp/` (same filesystem,
    so the final link is atomic). Implements `BlobStore`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise NotFoundError("No such blob")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def open_writer(self, *, max_bytes: int | None = None) -> BlobWriter:
        writer = _FileWriter(self, max_bytes)
        await writer.start()
        return writer

    async def put(
        self, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredBlob:
        """Stream `chunks` into the store; on any failure (including cancellation or a
        ClientDisconnect raised by `chunks`) the temp file is removed and the error re-raised.
        Over `max_bytes` raises PayloadTooLargeError; a full disk InsufficientStorageError."""
        writer = await self.open_writer(max_bytes=max_bytes)
        try:
            async for chunk in chunks:
                await writer.write(chunk)
            return await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def open(self, sha256: str, start: int = 0, end: int | None = None) -> BlobReader:
        """Open bytes `start..end` (both inclusive, as in an HTTP range; `end=None` is the last
        byte). Raises NotFoundError now, before any byte is sent, when the blob is missing."""
        path = self.path_for(sha256)

        def open_sync() -> tuple[BinaryIO, int]:
            file = path.open("rb")
            try:
                size = os.fstat(file.fileno()).st_size
                file.seek(start)
            except BaseException:
                file.close()
                raise
            return file, size

        if start < 0 or (end is not None and end < start):
            raise ValueError("invalid blob range")
        try:
            file, size = await _in_thread(open_sync)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFoundError("No such blob") from exc
        last = size - 1 if end is None else min(end, size - 1)
        return _FileReader(file, max(0, last - start + 1))

    async def size(self, sha256: str) -> int:
        path = self.path_for(sha256)
        try:
            return (await _in_thread(path.stat)).st_size
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFoundError("No such blob") from exc

    async def exists(self, sha256: str) -> bool:
        if not is_sha256(sha256):
            return False
        return await _in_thread(self.path_for(sha256).is_file)

    async def delete(self, sha256: str) -> bool:
        if not is_sha256(sha256):
            return False
        path = self.path_for(sha256)

        def delete_sync() -> bool:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            return True

        return await _in_thread(delete_sync)

    async def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        """Every stored blob with its mtime, one `ab/` directory per thread hop."""
        tops = await _in_thread(lambda: _list_dirs(self.root))
        for top in tops:
            if len(top.name) != 2:
                continue
            batch = await _in_thread(functools.partial(_scan_blobs, top))
            for info in batch:
                yield info

    async def iter_temp_files(self) -> AsyncIterator[TempFileInfo]:
        temp_dir = self.root / TEMP_DIR

        def scan() -> list[TempFileInfo]:
            found = []
            with contextlib.suppress(FileNotFoundError), os.scandir(temp_dir) as entries:
                for entry in entries:
                    with contextlib.suppress(FileNotFoundError):
                        if entry.is_file(follow_symlinks=False):
                            found.append(TempFileInfo(entry.name, entry.stat().st_mtime))
            return found

        for info in await _in_thread(scan):
            yield info

    async def remove_temp_file(self, name: str) -> bool:
        if "/" in name or "\\" in name or name in {"", ".", ".."}:
            return False
        path = self.root / TEMP_DIR / name

        def remove() -> bool:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            return True

        return await _in_thread(remove)


def _list_dirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return []


def _scan_blobs(top: Path) -> list[BlobInfo]:
    found = []
    for mid in _list_dirs(top):
        with os.scandir(mid) as entries:
            for entry in entries:
                if is_sha256(entry.name) and entry.name[:2] == top.name:
                    with contextlib.suppress(FileNotFoundError):
                        found.append(BlobInfo(entry.name, entry.stat().st_mtime))
    return found
