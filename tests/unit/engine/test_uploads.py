"""receive_upload over hand-built multipart bodies: results, limits, and all-or-nothing."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect

from engine.blobs import FileSystemBlobStore
from engine.errors import (
    BadRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from engine.uploads import UploadResult, discard_new_blobs, receive_upload

BOUNDARY = "----AetherBoundary7MA4YWxkTrZu0gW"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)


def part(name: str, data: bytes, filename: str | None = None, ctype: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"Content-Disposition: {disposition}\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    return f"--{BOUNDARY}\r\n".encode() + head.encode() + b"\r\n" + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def stream_of(data: bytes, chunk: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


class SinkStore(FileSystemBlobStore):
    """The store as an upload sink with no rows to consult: discarding deletes."""

    async def discard(self, sha256s: Sequence[str]) -> None:
        for sha256 in sha256s:
            await self.delete(sha256)


@pytest.fixture
def store(tmp_path: Path) -> FileSystemBlobStore:
    return SinkStore(tmp_path / "blobs")


async def upload(store: FileSystemBlobStore, data: bytes, chunk: int = 65536, **limits: int):
    limits.setdefault("max_bytes", 10 * 1024 * 1024)
    return await receive_upload(stream_of(data, chunk), CONTENT_TYPE, store, **limits)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536])
async def test_two_files_and_a_meta_field(store: FileSystemBlobStore, chunk: int) -> None:
    text = "Grüße\n".encode() * 50
    data = body(
        part("meta", b'{"role": "slides", "title": "T\xc3\xa9"}'),
        part("file", PNG, "../../logo.png", "text/html"),  # client type is ignored
        part("file", text, "Отчёт\u202e.txt"),  # raw UTF-8 in the header, as browsers send
    )
    result = await upload(store, data, chunk)
    assert result.fields == {"meta": '{"role": "slides", "title": "Té"}'}
    png, txt = result.files
    assert (png.filename, png.mime_type, png.size) == ("logo.png", "image/png", len(PNG))
    assert png.sha256 == hashlib.sha256(PNG).hexdigest() and png.created
    assert (txt.filename, txt.mime_type) == ("Отчёт.txt", "text/plain")
    assert txt.sha256 == hashlib.sha256(text).hexdigest()
    assert await store.exists(png.sha256) and await store.exists(txt.sha256)
    assert len(stored_files(store.root)) == 2  # no temp file left


async def test_large_file_streams_through(store: FileSystemBlobStore) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)
    result = await upload(store, body(part("file", content, "big.bin")), 65536)
    (f,) = result.files
    assert f.size == len(content) and f.sha256 == hashlib.sha256(content).hexdigest()
    assert f.mime_type == "application/octet-stream"


async def test_same_content_twice_is_one_blob(store: FileSystemBlobStore) -> None:
    result = await upload(store, body(part("file", b"x", "a.txt"), part("file", b"x", "b.txt")))
    assert [f.created for f in result.files] == [True, False]
    assert [f.filename for f in result.files] == ["a.txt", "b.txt"]
    assert len(stored_files(store.root)) == 1


async def test_part_without_filename_named_file_is_a_file(store: FileSystemBlobStore) -> None:
    (f,) = (await upload(store, body(part("file", b"data")))).files
    assert f.filename == "file"


async def test_limit_exceeded_mid_part_leaves_store_empty(store: FileSystemBlobStore) -> None:
    data = body(part("file", b"a" * 5000, "a.txt"), part("file", b"b" * 300_000, "b.txt"))
    with pytest.raises(PayloadTooLargeError):
        await upload(store, data, 1024, max_bytes=100_000)
    assert stored_files(store.root) == []


async def interrupted(data: bytes, at: int, error: BaseException) -> AsyncIterator[bytes]:
    async for chunk in stream_of(data[:at], 4096):
        yield chunk
    raise error


async def test_disconnect_mid_part_leaves_store_empty(store: FileSystemBlobStore) -> None:
    first = os.urandom(400_000)  # committed before the disconnect
    data = body(part("file", first, "a.bin"), part("file", os.urandom(400_000), "b.bin"))
    stream = interrupted(data, 600_000, ClientDisconnect())
    with pytest.raises(ClientDisconnect):
        await receive_upload(stream, CONTENT_TYPE, store, max_bytes=10**7)
    assert stored_files(store.root) == []


async def test_cancellation_mid_part_leaves_store_empty(store: FileSystemBlobStore) -> None:
    reached = asyncio.Event()
    data = body(part("file", b"a" * 300_000, "a.bin"), part("file", b"b" * 300_000, "b.bin"))

    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in stream_of(data[:450_000], 4096):
            yield chunk
        reached.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(receive_upload(stalls(), CONTENT_TYPE, store, max_bytes=10**7))
    await reached.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)  # the shielded cleanup finishes in its own task
    assert stored_files(store.root) == []


async def test_failure_keeps_blobs_that_existed_before(store: FileSystemBlobStore) -> None:
    existing = await upload(store, body(part("file", b"old bytes", "old.txt")))
    data = body(part("file", b"old bytes", "again.txt"), part("file", b"new bytes", "new.txt"))
    with pytest.raises(BadRequestError):
        await upload(store, data[:-10])  # truncated: no closing boundary
    assert await store.exists(existing.files[0].sha256)
    assert len(stored_files(store.root)) == 1


async def test_discard_new_blobs(store: FileSystemBlobStore) -> None:
    await upload(store, body(part("file", b"kept", "k.txt")))
    result = await upload(store, body(part("file", b"kept", "k.txt"), part("file", b"n", "n")))
    await discard_new_blobs(store, result)
    sha_kept, sha_new = (f.sha256 for f in result.files)
    assert await store.exists(sha_kept)
    assert not await store.exists(sha_new)


async def test_missing_file_part_is_422(store: FileSystemBlobStore) -> None:
    with pytest.raises(ValidationError) as info:
        await upload(store, body(part("meta", b"{}")))
    assert info.value.errors == [{"path": "file", "message": "at least one file part is required"}]


async def test_empty_browser_file_input_is_no_file(store: FileSystemBlobStore) -> None:
    with pytest.raises(ValidationError):
        await upload(store, body(part("file", b"", "", "application/octet-stream")))
    assert stored_files(store.root) == []


async def test_empty_named_file_is_kept(store: FileSystemBlobStore) -> None:
    (f,) = (await upload(store, body(part("file", b"", "empty.txt")))).files
    assert f.size == 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain",
        "",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "x" * 71,
        "multipart/mixed; boundary=abc",
    ],
)
async def test_not_multipart_is_415(store: FileSystemBlobStore, content_type: str) -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        await receive_upload(stream_of(b"x"), content_type, store, max_bytes=100)


async def test_quoted_boundary_and_case(store: FileSystemBlobStore) -> None:
    ctype = f'Multipart/Form-Data; charset=utf-8; boundary="{BOUNDARY}"'
    result = await receive_upload(
        stream_of(body(part("file", b"q", "q.txt"))), ctype, store, max_bytes=10**6
    )
    assert len(result.files) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"this is not multipart at all",
        f"--{BOUNDARY}\r\nno-colon-header\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
        f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
        f'--{BOUNDARY}\r\nContent-Disposition: attachment; name="file"\r\n\r\nx\r\n'.encode(),
        b"",
    ],
)
async def test_malformed_multipart_is_400(store: FileSystemBlobStore, data: bytes) -> None:
    with pytest.raises(BadRequestError):
        await upload(store, data)
    assert stored_files(store.root) == []


async def test_too_many_files_is_413(store: FileSystemBlobStore) -> None:
    data = body(*(part("file", str(i).encode(), f"{i}.txt") for i in range(4)))
    with pytest.raises(PayloadTooLargeError):
        await upload(store, data, max_files=3)
    assert stored_files(store.root) == []


async def test_too_many_fields_is_413(store: FileSystemBlobStore) -> None:
    data = body(*(part(f"f{i}", b"v") for i in range(3)), part("file", b"x", "x"))
    with pytest.raises(PayloadTooLargeError):
        await upload(store, data, max_fields=2)


async def test_field_over_its_cap_is_413(store: FileSystemBlobStore) -> None:
    data = body(part("file", b"x", "x"), part("meta", b"m" * 2000))
    with pytest.raises(PayloadTooLargeError):
        await upload(store, data, max_field_bytes=1000)
    assert stored_files(store.root) == []


@pytest.mark.parametrize(
    ("parts", "path"),
    [
        ([part("meta", b"1"), part("meta", b"2")], "meta"),
        ([part("avatar", b"x", "x.png")], "avatar"),
        ([part("meta", b"\xff\xfe")], "meta"),
    ],
)
async def test_bad_fields_are_422(
    store: FileSystemBlobStore, parts: list[bytes], path: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await upload(store, body(part("file", b"x", "x"), *parts))
    assert info.value.errors[0]["path"] == path
    assert stored_files(store.root) == []


async def test_result_type(store: FileSystemBlobStore) -> None:
    result = await upload(store, body(part("file", b"x", "x")))
    assert isinstance(result, UploadResult)
    assert result.fields == {}
