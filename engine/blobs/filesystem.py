"""`FileSystemBlobStore`: blobs as files under `root/ab/cd/<sha256>` on a local disk.

Writes go through `TempFileWriter` (temp file in `root/.tmp`, hashed, fsynced, linked into
place); a blob that already exists is never written twice. Reads stream an inclusive byte
range in CHUNK_SIZE pieces. Every disk call runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from engine.blobs._io import fsync_dir, in_thread, shielded
from engine.blobs._writer import TEMP_DIR, TempFileWriter
from engine.blobs.store import (
    CHUNK_SIZE,
    BlobInfo,
    BlobReader,
    BlobWriter,
    StoredBlob,
    TempFileInfo,
    is_sha256,
    put_through_writer,
)
from engine.errors import NotFoundError

__all__ = ["STORE_ID_FILE", "FileSystemBlobStore"]

STORE_ID_FILE = ".store-id"


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
        data = await in_thread(lambda: self._read_sync(min(CHUNK_SIZE, self._remaining)))
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
            await shielded(self._close_sync)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


class FileSystemBlobStore:
    """Blobs under `root/ab/cd/<sha256>`, temp files under `root/.tmp/` (same filesystem,
    so the final link is atomic). Implements `BlobStore`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root.resolve())

    async def read_store_id(self) -> str | None:
        """The id in `root/.store-id`, or None when the store has none yet."""
        return await in_thread(lambda: _read_id(self.root / STORE_ID_FILE))

    async def claim_store_id(self, store_id: str) -> str:
        """Record `store_id` in `root/.store-id` unless an id is there; return the one kept.

        The file is written whole under `.tmp` and hard-linked into place: the link fails
        when the name exists, so of two racing claimers exactly one wins and both read it.
        """
        if not store_id or not store_id.isalnum():
            raise ValueError("a store id is letters and digits")

        def claim() -> str:
            target = self.root / STORE_ID_FILE
            temp = self.root / TEMP_DIR / f"store-id-{uuid.uuid4().hex}.part"
            temp.parent.mkdir(parents=True, exist_ok=True)
            with temp.open("x") as file:
                file.write(store_id + "\n")
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temp, target)
                fsync_dir(self.root)
            except FileExistsError:
                pass
            finally:
                temp.unlink()
            found = _read_id(target)
            assert found is not None  # linked just now, or by the claimer that won
            return found

        return await in_thread(claim)

    def path_for(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise NotFoundError("No such blob")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def open_writer(self, *, max_bytes: int | None = None) -> BlobWriter:
        writer = TempFileWriter(self.root, self.path_for, max_bytes)
        await writer.start()
        return writer

    async def put(
        self, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredBlob:
        """Stream `chunks` into the store; on any failure (including cancellation or a
        ClientDisconnect raised by `chunks`) the temp file is removed and the error re-raised.
        Over `max_bytes` raises PayloadTooLargeError; a full disk InsufficientStorageError."""
        return await put_through_writer(self, chunks, max_bytes=max_bytes)

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
            file, size = await in_thread(open_sync)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFoundError("No such blob") from exc
        last = size - 1 if end is None else min(end, size - 1)
        return _FileReader(file, max(0, last - start + 1))

    async def size(self, sha256: str) -> int:
        path = self.path_for(sha256)
        try:
            return (await in_thread(path.stat)).st_size
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFoundError("No such blob") from exc

    async def exists(self, sha256: str) -> bool:
        if not is_sha256(sha256):
            return False
        return await in_thread(self.path_for(sha256).is_file)

    async def delete(self, sha256: str) -> bool:
        if not is_sha256(sha256):
            return False
        return await in_thread(functools.partial(_unlink, self.path_for(sha256)))

    async def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        """Every stored blob with its mtime, one `ab/` directory per thread hop."""
        tops = await in_thread(lambda: _list_dirs(self.root))
        for top in tops:
            if len(top.name) != 2:
                continue
            batch = await in_thread(functools.partial(_scan_blobs, top))
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

        for info in await in_thread(scan):
            yield info

    async def close(self) -> None:
        return None

    async def remove_temp_file(self, name: str) -> bool:
        if "/" in name or "\\" in name or name in {"", ".", ".."}:
            return False
        return await in_thread(functools.partial(_unlink, self.root / TEMP_DIR / name))


def _read_id(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


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
