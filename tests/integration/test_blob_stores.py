"""The blob stores: content addressing, dedupe, limits, atomicity, reads, GC.

Every test of the `store` fixture runs on the file-system store and on the S3 store (a
private moto server, a bucket per test, parts of the smallest size S3 allows so that a few
megabytes take the multipart path). The helpers below look at a store through its own
interface (`iter_blobs`, `iter_temp_files`) plus what is physically left over: files under
the root, or objects and multipart uploads in the bucket. Tests of one store's own failure
modes (a full disk, a failed link, S3 unreachable) name it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import math
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect

from engine import blobs
from engine.blob_gc import collect_garbage
from engine.blobs import BlobStore, FileSystemBlobStore, _writer, is_sha256
from engine.blobs.s3 import MIN_PART_SIZE, S3BlobStore
from engine.errors import (
    InsufficientStorageError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def leftovers(store: BlobStore) -> list[str]:
    """Everything the store physically holds: files, or objects and multipart uploads."""
    if isinstance(store, FileSystemBlobStore):
        return [str(p.relative_to(store.root)) for p in files_under(store.root)]
    assert isinstance(store, S3BlobStore)
    client = await store.client()
    found = []
    listed = await client.list_objects_v2(Bucket=store.bucket)
    found += [str(item["Key"]) for item in listed.get("Contents", ())]
    uploads = await client.list_multipart_uploads(Bucket=store.bucket)
    found += [f"upload:{u['Key']}" for u in uploads.get("Uploads", ())]
    return sorted(found)


async def temp_files(store: BlobStore) -> list[str]:
    return sorted([t.name async for t in store.iter_temp_files()])


async def blob_names(store: BlobStore) -> list[str]:
    return sorted([b.sha256 async for b in store.iter_blobs()])


def part_size(store: BlobStore) -> int:
    """Bytes after which a writer has certainly sent something to the store."""
    return store.part_size if isinstance(store, S3BlobStore) else blobs.CHUNK_SIZE


async def read_all(store: BlobStore, sha: str, start: int = 0, end: int | None = None) -> bytes:
    reader = await store.open(sha, start, end)
    return b"".join([chunk async for chunk in reader])


async def second_boundary() -> float:
    """Wait until the wall clock has passed a whole second plus one; answer that second.

    Everything stored before the call is older than the answer, and everything after is
    newer, on a file system and on S3 alike (S3 keeps whole seconds): a cut-off that
    separates the two without setting any clock.
    """
    cut = math.floor(time.time()) + 1
    await asyncio.sleep(cut + 1 - time.time() + 0.01)
    return float(cut)


@pytest.fixture(params=["filesystem", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    if store_kind == "filesystem":
        yield FileSystemBlobStore(tmp_path / "blobs")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    made = S3BlobStore(
        f"s3://{server.new_bucket()}/store",
        endpoint_url=server.endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        part_size=MIN_PART_SIZE,
    )
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
def fs_store(tmp_path: Path) -> Iterator[FileSystemBlobStore]:
    yield FileSystemBlobStore(tmp_path / "blobs")


@pytest.mark.parametrize("parts", [1, 2])  # below one S3 part, and a multipart upload
async def test_put_stores_content_under_its_sha256(store: BlobStore, parts: int) -> None:
    data = (b"hello " * (MIN_PART_SIZE // 6 + 1))[: MIN_PART_SIZE * parts - 1000]
    blob = await store.put(chunks_of(data[:1000], data[1000:]))
    sha = hashlib.sha256(data).hexdigest()
    assert (blob.sha256, blob.size, blob.created) == (sha, len(data), True)
    assert await read_all(store, sha) == data
    assert await store.exists(sha)
    assert await store.size(sha) == len(data)
    assert await blob_names(store) == [sha]
    assert await temp_files(store) == []
    assert len(await leftovers(store)) == 1  # the blob alone: no temp file or upload left


@pytest.mark.parametrize("size", [3, MIN_PART_SIZE + 3])
async def test_same_bytes_are_stored_once(store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    first = await store.put(chunks_of(data))
    second = await store.put(chunks_of(data[:1], data[1:]))
    assert first.sha256 == second.sha256
    assert (first.created, second.created) == (True, False)
    assert len(await leftovers(store)) == 1


async def test_concurrent_identical_puts_report_one_creator(store: BlobStore) -> None:
    data = os.urandom(4000)
    results = await asyncio.gather(*(store.put(chunks_of(data)) for _ in range(8)))
    assert sum(r.created for r in results) == 1
    assert await temp_files(store) == []
    assert len(await leftovers(store)) == 1


async def test_empty_blob(store: BlobStore) -> None:
    blob = await store.put(chunks_of())
    assert blob.sha256 == hashlib.sha256(b"").hexdigest()
    assert blob.size == 0
    assert await read_all(store, blob.sha256) == b""


async def test_max_bytes_is_enforced_while_streaming(store: BlobStore) -> None:
    pulled: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for i in range(1000):
            pulled.append(i)
            yield b"x" * 1024

    with pytest.raises(PayloadTooLargeError):
        await store.put(endless(), max_bytes=10 * 1024)
    assert len(pulled) == 11  # stopped at the first chunk over the limit
    assert await leftovers(store) == []


async def test_max_bytes_past_a_sent_part_leaves_nothing(store: BlobStore) -> None:
    limit = part_size(store) + 10
    with pytest.raises(PayloadTooLargeError):
        await store.put(chunks_of(b"x" * (limit - 5), b"y" * 10), max_bytes=limit)
    assert await leftovers(store) == []


async def test_exactly_max_bytes_is_accepted(store: BlobStore) -> None:
    blob = await store.put(chunks_of(b"x" * 10), max_bytes=10)
    assert blob.size == 10


@pytest.mark.parametrize("error", [RuntimeError("boom"), ClientDisconnect()])
async def test_failure_mid_stream_leaves_nothing(store: BlobStore, error: Exception) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"a" * (part_size(store) + 10)  # forces a real write to the temp file
        yield b"b"  # the write above is sent before this is asked for
        assert await temp_files(store)  # the temp file exists while streaming
        raise error

    with pytest.raises(type(error)):
        await store.put(failing())
    assert await leftovers(store) == []


async def test_cancellation_mid_stream_leaves_nothing(store: BlobStore) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * (part_size(store) + 10)
        yield b"b"
        started.set()
        await asyncio.sleep(60)
        yield b"never"

    task = asyncio.create_task(store.put(slow()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await leftovers(store) == []


async def test_disk_full_is_507_and_removes_the_temp_file(
    fs_store: FileSystemBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = fs_store

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
    fs_store: FileSystemBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = fs_store

    def broken_link(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(_writer.os, "link", broken_link)
    with pytest.raises(OSError):
        await store.put(chunks_of(b"data"))
    assert files_under(store.root) == []


async def test_writer_api(store: BlobStore) -> None:
    size = part_size(store) + 5
    writer = await store.open_writer(max_bytes=size * 2)
    await writer.write(b"1" * size)
    await writer.write(b"2345")
    assert writer.size == size + 4
    assert len(await temp_files(store)) == 1
    await writer.abort()
    await writer.abort()  # idempotent
    assert await leftovers(store) == []


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(0, None, b"0123456789"), (2, 4, b"234"), (7, None, b"789"), (9, 50, b"9"), (3, 3, b"3")],
)
async def test_open_reads_an_inclusive_range(
    store: BlobStore, start: int, end: int | None, expected: bytes
) -> None:
    blob = await store.put(chunks_of(b"0123456789"))
    assert await read_all(store, blob.sha256, start, end) == expected


async def test_open_past_the_end_reads_nothing(store: BlobStore) -> None:
    blob = await store.put(chunks_of(b"0123456789"))
    assert await read_all(store, blob.sha256, 10) == b""
    assert await read_all(store, blob.sha256, 50, 60) == b""


async def test_a_reader_closed_early_releases_the_blob(store: BlobStore) -> None:
    data = os.urandom(blobs.CHUNK_SIZE * 3)
    blob = await store.put(chunks_of(data))
    for _ in range(60):  # more than any connection pool: each must have been released
        reader = await store.open(blob.sha256)
        first = await reader.__anext__()
        assert 0 < len(first) <= blobs.CHUNK_SIZE and first == data[: len(first)]
        await reader.aclose()
    assert await read_all(store, blob.sha256, 1, 2) == data[1:3]


async def test_open_streams_in_chunks(store: BlobStore) -> None:
    data = os.urandom(blobs.CHUNK_SIZE * 3 + 5)
    blob = await store.put(chunks_of(data))
    reader = await store.open(blob.sha256)
    sizes = [len(chunk) async for chunk in reader]
    assert max(sizes) <= blobs.CHUNK_SIZE and sum(sizes) == len(data)


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 63 + "\n", "a" * 65, "0" * 64],
)
async def test_bad_or_unknown_sha_is_not_found(store: BlobStore, bad: str) -> None:
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


async def test_delete(store: BlobStore) -> None:
    blob = await store.put(chunks_of(b"bye"))
    assert await store.delete(blob.sha256)
    assert not await store.exists(blob.sha256)
    assert not await store.delete(blob.sha256)


async def test_gc_honours_references_grace_and_dry_run(store: BlobStore) -> None:
    """Blobs and temp files from before the cut-off are old, those after it young; the
    collection runs as if the grace period had passed since the cut-off (`now`)."""
    grace = 3600.0
    keep = await store.put(chunks_of(b"referenced"))
    old = await store.put(chunks_of(b"orphan, old"))
    stale = await store.open_writer()
    await stale.write(b"s" * (part_size(store) + 1))
    await stale.write(b"half an upload")
    (stale_name,) = await temp_files(store)
    cut = await second_boundary()
    new = await store.put(chunks_of(b"orphan, new"))
    fresh = await store.open_writer()  # an upload in flight
    await fresh.write(b"f" * (part_size(store) + 1))
    await fresh.write(b"more")
    now = cut + grace

    dry = await collect_garbage(store, {keep.sha256}, grace_seconds=grace, dry_run=True, now=now)
    assert dry.removed_blobs == [old.sha256]
    assert dry.removed_temp_files == [stale_name]
    assert await store.exists(old.sha256) and stale_name in await temp_files(store)

    report = await collect_garbage(
        store, {keep.sha256}, grace_seconds=grace, dry_run=False, now=now
    )
    assert report.removed_blobs == [old.sha256]
    assert report.removed_temp_files == [stale_name]
    assert report.kept_recent == 2  # `new` and the fresh temp file
    assert not await store.exists(old.sha256)
    assert await store.exists(keep.sha256) and await store.exists(new.sha256)
    assert len(await temp_files(store)) == 1
    await fresh.abort()
    await stale.abort()
    assert await temp_files(store) == []


async def test_dedupe_hit_refreshes_mtime_for_gc(store: BlobStore) -> None:
    grace = 3600.0
    blob = await store.put(chunks_of(b"shared"))
    unrelated = await store.put(chunks_of(b"not stored again"))
    cut = await second_boundary()
    again = await store.put(chunks_of(b"shared"))
    assert not again.created
    report = await collect_garbage(
        store, set(), grace_seconds=grace, dry_run=False, now=cut + grace
    )
    assert report.removed_blobs == [unrelated.sha256]  # the cut-off does separate the two
    assert await store.exists(blob.sha256)


async def test_gc_on_empty_store(store: BlobStore) -> None:
    report = await collect_garbage(store, set(), grace_seconds=0, dry_run=False)
    assert (report.removed_blobs, report.removed_temp_files) == ([], [])


async def test_remove_temp_file_refuses_paths(store: BlobStore) -> None:
    assert not await store.remove_temp_file("../x")
    assert not await store.remove_temp_file("..")


async def test_store_id_is_claimed_once_and_is_not_a_blob(store: BlobStore) -> None:
    assert await store.read_store_id() is None
    assert await store.claim_store_id("first") == "first"
    assert await store.claim_store_id("second") == "first"  # the first claim stays
    assert await store.read_store_id() == "first"
    (only,) = await leftovers(store)  # the id alone: no temp file left
    assert only.rsplit("/", 1)[-1] in (".store-id", "store-id")
    assert [b async for b in store.iter_blobs()] == []
    report = await collect_garbage(store, set(), grace_seconds=0, dry_run=False)
    assert report.removed_blobs == [] and report.removed_temp_files == []
    assert await store.read_store_id() == "first"


async def test_racing_store_id_claims_agree(store: BlobStore) -> None:
    won = await asyncio.gather(*(store.claim_store_id(f"id{i}") for i in range(8)))
    assert len(set(won)) == 1 and await store.read_store_id() == won[0]


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "id\n"])
async def test_a_store_id_is_letters_and_digits(store: BlobStore, bad: str) -> None:
    with pytest.raises(ValueError):
        await store.claim_store_id(bad)


async def test_s3_unreachable_is_503_and_answers_nothing_stored() -> None:
    from tests.redis_servers import free_ports

    (port,) = free_ports(1)  # nothing listens here
    store = S3BlobStore(
        "s3://aether-nowhere/x",
        endpoint_url=f"http://127.0.0.1:{port}",
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    try:
        with pytest.raises(ServiceUnavailableError) as info:
            await store.put(chunks_of(b"data"))
        assert info.value.status == 503
        with pytest.raises(ServiceUnavailableError):
            await store.open("0" * 64)
        with pytest.raises(ServiceUnavailableError):
            await store.exists("0" * 64)
    finally:
        await store.close()


@pytest.mark.parametrize("store_kind", ["s3"])
async def test_s3_keys_live_under_the_prefix(store: BlobStore) -> None:
    assert isinstance(store, S3BlobStore)
    blob = await store.put(chunks_of(b"laid out"))
    await store.claim_store_id("abc")
    assert await leftovers(store) == ["store/blobs/" + blob.sha256, "store/store-id"]


@pytest.mark.parametrize("store_kind", ["s3"])
async def test_s3_conditional_copy_into_place_creates_once(store: BlobStore) -> None:
    """The large path's last step (UploadPartCopy completed with If-None-Match: *): a copy
    onto a key that exists reports False and leaves no upload behind. (moto checks the
    condition before assembling the parts, not atomically with it, so racing completions
    are not tested against it; S3 itself answers 412 or 409 to all but one.)"""
    assert isinstance(store, S3BlobStore)
    data = os.urandom(MIN_PART_SIZE + 10)
    blob = await store.put(chunks_of(data))
    client = await store.client()
    source = store.temp_key("copy-source")
    await client.put_object(Bucket=store.bucket, Key=source, Body=b"other bytes")
    assert not await store.copy_new(source, store.blob_key(blob.sha256), 11)
    assert await read_all(store, blob.sha256) == data  # untouched
    fresh = store.blob_key("f" * 64)
    assert await store.copy_new(source, fresh, 11)
    assert not await store.copy_new(source, fresh, 11)
    await client.delete_object(Bucket=store.bucket, Key=source)
    assert await blob_names(store) == sorted([blob.sha256, "f" * 64])
    assert not any(name.startswith("upload:") for name in await leftovers(store))
