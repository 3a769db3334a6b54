"""Hashing temp-file writer: stream into `<root>/.tmp/<uuid>.part`, then link into place.

The SHA-256 is computed in the same worker-thread hop as each disk write. `commit` fsyncs
and hard-links the temp file to its final name, so a blob appears whole or not at all and
exactly one of two racing writers of the same bytes reports that it created it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from engine.blobs._io import fsync_dir, in_thread, shielded
from engine.blobs.store import CHUNK_SIZE, StoredBlob
from engine.errors import InsufficientStorageError, PayloadTooLargeError

TEMP_DIR = ".tmp"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class TempFileWriter:
    """A `BlobWriter` over a temp file in `root/.tmp`; `place(sha256)` names the final path,
    which must be under `root` (same file system, so the link is atomic)."""

    def __init__(self, root: Path, place: Callable[[str], Path], max_bytes: int | None) -> None:
        self._root = root
        self._place = place
        self._max_bytes = max_bytes
        self._temp = root / TEMP_DIR / f"{uuid.uuid4().hex}.part"
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
            await in_thread(func)
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
            final = self._place(sha256)
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
                fsync_dir(final.parent)
                if created_dirs:
                    fsync_dir(final.parent.parent)
                    fsync_dir(self._root)
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
        await shielded(self._abort_sync)
