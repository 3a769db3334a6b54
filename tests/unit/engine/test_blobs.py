"""FileSystemBlobStore: content addressing, dedupe, limits, atomicity, reads, GC."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect

from engine import blobs
from engine.blob_gc import collect_garbage
from engine.blobs import FileSystemBlobStore, _writer, is_sha256
from engine.errors import InsufficientStorageError, NotFoundError, PayloadTooLargeError


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return files_under(root / _writer.TEMP_DIR) if (root / _writer.TEMP_DIR).exists() else []


async def read_all(store: FileSystemBlobStore, sha: str, start: int = 0, end: int | None = None):
    reader = await store.open(sha, start, end)
    return b"".join([chunk async for chunk in reader])


@pytest.fixture
def store(tmp_path: Path) -> FileSystemBlobStore:
    return FileSystemBlobStore(tmp_path / "blobs")


async def test_put_stores_content_under_its_sha256(store: FileSystemBlobStore) -> None:
    data = b"hello " * 100_000  # several CHUNK_SIZE flushes
    blob = await store.put(chunks_of(data[:1000], data[1000:]))
    sha = hashlib.sha256(data).hexdigest()
    assert (blob.sha256, blob.size, blob.created) == (sha, len(data), True)
    path = store.root / sha[:2] / sha[2:4] / sha
    assert path.read_bytes() == data
    assert await store.exists(sha)
    assert await store.size(sha) == len(data)
    assert temp_files(store.root) == []


async def test_same_bytes_are_stored_once(store: FileSystemBlobStore) -> None:
    first = await store.put(chunks_of(b"abc"))
    second = await store.put(chunks_of(b"a", b"bc"))
    assert first.sha256 == second.sha256
    assert (first.created, second.created) == (True, False)
    assert len(files_under(store.root)) == 1


async def test_concurrent_identical_puts_report_one_creator(store: FileSystemBlobStore) -> None:
    results = await asyncio.gather(*(store.put(chunks_of(b"same" * 1000)) for _ in range(8)))
    assert sum(r.created for r in results) == 1
    assert temp_files(store.root) == []


async def test_empty_blob(store: FileSystemBlobStore) -> None:
    blob = await store.put(chunks_of())
    assert blob.sha256 == hashlib.sha256(b"").hexdigest()
    assert blob.size == 0
    assert await read_all(store, blob.sha256) == b""


async def test_max_bytes_is_enforced_while_streaming(store: FileSystemBlobStore) -> None:
    pulled: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for i in range(1000):
            pulled.append(i)
            yield b"x" * 1024

    with pytest.raises(PayloadTooLargeError):
        await store.put(endless(), max_bytes=10 * 1024)
    assert len(pulled) == 11  # stopped at the first chunk over the limit
    assert files_under(store.root) == []


async def test_exactly_max_bytes_is_accepted(store: FileSystemBlobStore) -> None:
    blob = await store.put(chunks_of(b"x" * 10), max_bytes=10)
    assert blob.size == 10


@pytest.mark.parametrize("error", [RuntimeError("boom"), ClientDisconnect()])
async def test_failure_mid_stream_leaves_nothing(
    store: FileSystemBlobStore, error: Exception
) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"a" * (blobs.CHUNK_SIZE + 10)  # forces a real write to the temp file
        assert temp_files(store.root)  # the temp file exists while streaming
        raise error

    with pytest.raises(type(error)):
        await store.put(failing())
    assert files_under(store.root) == []


async def test_cancellation_mid_stream_leaves_nothing(store: FileSystemBlobStore) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * (blobs.CHUNK_SIZE + 10)
        started.set()
        await asyncio.sleep(60)
        yield b"never"

    task = asyncio.create_task(store.put(slow()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files_under(store.root) == []


async def test_disk_full_is_507_and_removes_the_temp_file(
    store: FileSystemBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(self: object, chunk: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_writer.TempFileWriter, "_write_sync", no_space)
    with pytest.raises(InsufficientStorageError) as info:
        await store.put(chunks_of(b"z" * (blobs.CHUNK_SIZE * 2)))
    assert info.value.status == 507
    assert files_under(store.root) == []
    monkeypatch.undo()
    assert (await store.put(chunks_of(b"z"))).created  # the next upload succeeds


async def test_failed_commit_removes_temp(
    store: FileSystemBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_link(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(_writer.os, "link", broken_link)
    with pytest.raises(OSError):
        await store.put(chunks_of(b"data"))
    assert files_under(store.root) == []


async def test_writer_api(store: FileSystemBlobStore) -> None:
    writer = await store.open_writer(max_bytes=100)
    await writer.write(b"12345")
    assert writer.size == 5
    assert len(temp_files(store.root)) == 1
    await writer.abort()
    await writer.abort()  # idempotent
    assert files_under(store.root) == []


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(0, None, b"0123456789"), (2, 4, b"234"), (7, None, b"789"), (9, 50, b"9"), (3, 3, b"3")],
)
async def test_open_reads_an_inclusive_range(
    store: FileSystemBlobStore, start: int, end: int | None, expected: bytes
) -> None:
    blob = await store.put(chunks_of(b"0123456789"))
    assert await read_all(store, blob.sha256, start, end) == expected


async def test_open_streams_in_chunks(store: FileSystemBlobStore) -> None:
    data = os.urandom(blobs.CHUNK_SIZE * 3 + 5)
    blob = await store.put(chunks_of(data))
    reader = await store.open(blob.sha256)
    sizes = [len(chunk) async for chunk in reader]
    assert max(sizes) <= blobs.CHUNK_SIZE and sum(sizes) == len(data)


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 63 + "\n", "a" * 65, "0" * 64],
)
async def test_bad_or_unknown_sha_is_not_found(store: FileSystemBlobStore, bad: str) -> None:
    with pytest.raises(NotFoundError):
        await store.open(bad)
    with pytest.raises(NotFoundError):
        await store.size(bad)
    assert not await store.exists(bad)
    assert not await store.delete(bad)


def test_is_sha256() -> None:
    assert is_sha256("0" * 64)
    assert not is_sha256("0" * 64 + "\n")
    assert not is_sha256(None)


async def test_delete(store: FileSystemBlobStore) -> None:
    blob = await store.put(chunks_of(b"bye"))
    assert await store.delete(blob.sha256)
    assert not await store.exists(blob.sha256)
    assert not await store.delete(blob.sha256)


async def test_gc_honours_references_grace_and_dry_run(store: FileSystemBlobStore) -> None:
    keep = await store.put(chunks_of(b"referenced"))
    old = await store.put(chunks_of(b"orphan, old"))
    new = await store.put(chunks_of(b"orphan, new"))
    long_ago = time.time() - 7200
    for blob in (keep, old):
        os.utime(store.path_for(blob.sha256), (long_ago, long_ago))
    stale = await store.open_writer()
    await stale.write(b"half an upload")
    (stale_path,) = temp_files(store.root)
    os.utime(stale_path, (long_ago, long_ago))
    fresh = await store.open_writer()  # an upload in flight

    dry = await collect_garbage(store, {keep.sha256}, grace_seconds=3600, dry_run=True)
    assert dry.removed_blobs == [old.sha256]
    assert dry.removed_temp_files == [stale_path.name]
    assert await store.exists(old.sha256) and stale_path.exists()

    report = await collect_garbage(store, {keep.sha256}, grace_seconds=3600, dry_run=False)
    assert report.removed_blobs == [old.sha256]
    assert report.removed_temp_files == [stale_path.name]
    assert report.kept_recent == 2  # `new` and the fresh temp file
    assert not await store.exists(old.sha256)
    assert await store.exists(keep.sha256) and await store.exists(new.sha256)
    assert len(temp_files(store.root)) == 1
    await fresh.abort()
    await stale.abort()


async def test_dedupe_hit_refreshes_mtime_for_gc(store: FileSystemBlobStore) -> None:
    blob = await store.put(chunks_of(b"shared"))
    long_ago = time.time() - 7200
    os.utime(store.path_for(blob.sha256), (long_ago, long_ago))
    await store.put(chunks_of(b"shared"))
    report = await collect_garbage(store, set(), grace_seconds=3600, dry_run=False)
    assert report.removed_blobs == []


async def test_gc_on_empty_store(store: FileSystemBlobStore) -> None:
    report = await collect_garbage(store, set(), grace_seconds=0, dry_run=False)
    assert (report.removed_blobs, report.removed_temp_files) == ([], [])


async def test_remove_temp_file_refuses_paths(store: FileSystemBlobStore) -> None:
    assert not await store.remove_temp_file("../x")
    assert not await store.remove_temp_file("..")


async def test_store_id_is_claimed_once_and_is_not_a_blob(store: FileSystemBlobStore) -> None:
    assert await store.read_store_id() is None
    assert await store.claim_store_id("first") == "first"
    assert await store.claim_store_id("second") == "first"  # the first claim stays
    assert await store.read_store_id() == "first"
    assert [p.name for p in files_under(store.root)] == [".store-id"]  # no temp file left
    assert [b async for b in store.iter_blobs()] == []
    report = await collect_garbage(store, set(), grace_seconds=0, dry_run=False)
    assert report.removed_blobs == [] and report.removed_temp_files == []
    assert await store.read_store_id() == "first"


async def test_racing_store_id_claims_agree(store: FileSystemBlobStore) -> None:
    won = await asyncio.gather(*(store.claim_store_id(f"id{i}") for i in range(8)))
    assert len(set(won)) == 1 and await store.read_store_id() == won[0]


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "id\n"])
async def test_a_store_id_is_letters_and_digits(store: FileSystemBlobStore, bad: str) -> None:
    with pytest.raises(ValueError):
        await store.claim_store_id(bad)
