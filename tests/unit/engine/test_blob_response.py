"""blob_response through a tiny Starlette app: validators, 304, 206, 416, HEAD, active types."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.blob_response import ACTIVE_CSP, CACHE_CONTROL, blob_response
from engine.blobs import CHUNK_SIZE, FileSystemBlobStore
from engine.errors import AetherError
from engine.responses import matches_etag

CONTENT = bytes(range(256)) * 40  # 10,240 bytes


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


def build_app(store: FileSystemBlobStore, mime_type: str, size: int | None = None) -> Starlette:
    async def endpoint(request: Request) -> Response:
        sha = request.path_params["sha"]
        q = request.query_params
        return blob_response(
            request,
            store,
            sha256=sha,
            size=size if size is not None else await store.size(sha),
            mime_type=q.get("mime", mime_type),
            filename=q.get("name"),
            content_location=q.get("loc"),
            extra_headers={"X-Request-ID": "r1"},
        )

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AetherError)
        return JSONResponse(
            {"status": exc.status, "type": exc.type},
            status_code=exc.status,
            headers=exc.headers,
            media_type="application/problem+json",
        )

    return Starlette(
        routes=[Route("/blob/{sha}", endpoint, methods=["GET", "HEAD"])],
        exception_handlers={AetherError: problem},
    )


@pytest.fixture
async def store(tmp_path: Path) -> FileSystemBlobStore:
    return FileSystemBlobStore(tmp_path / "blobs")


@pytest.fixture
async def sha(store: FileSystemBlobStore) -> str:
    return (await store.put(chunks_of(CONTENT))).sha256


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def get(store, sha, mime="image/png", method="GET", headers=None, params=None, size=None):
    async with client_for(build_app(store, mime, size)) as client:
        return await client.request(method, f"/blob/{sha}", headers=headers, params=params)


async def test_full_content_and_headers(store: FileSystemBlobStore, sha: str) -> None:
    r = await get(store, sha)
    assert r.status_code == 200
    assert r.content == CONTENT
    assert r.headers["etag"] == f'"{sha}"'
    assert r.headers["cache-control"] == CACHE_CONTROL
    assert r.headers["vary"] == "Authorization, X-API-Key"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-length"] == str(len(CONTENT))
    assert r.headers["content-disposition"] == "inline"
    assert r.headers["x-request-id"] == "r1"
    assert "content-security-policy" not in r.headers


async def test_large_blob_streams_in_chunks(store: FileSystemBlobStore) -> None:
    data = b"\x00" * (CHUNK_SIZE * 3 + 1)
    blob = await store.put(chunks_of(data))
    r = await get(store, blob.sha256, "application/octet-stream")
    assert hashlib.sha256(r.content).hexdigest() == blob.sha256


@pytest.mark.parametrize(
    "inm",
    ['"{sha}"', 'W/"{sha}"', "*", '"other", W/"{sha}"', ' "x" ,"{sha}" '],
)
async def test_if_none_match_gives_304(store: FileSystemBlobStore, sha: str, inm: str) -> None:
    for method in ("GET", "HEAD"):
        r = await get(store, sha, method=method, headers={"If-None-Match": inm.format(sha=sha)})
        assert r.status_code == 304
        assert r.content == b""
        assert r.headers["etag"] == f'"{sha}"'
        assert r.headers["cache-control"] == CACHE_CONTROL
        assert r.headers["vary"] == "Authorization, X-API-Key"


async def test_other_etag_gives_200(store: FileSystemBlobStore, sha: str) -> None:
    r = await get(store, sha, headers={"If-None-Match": '"' + "0" * 64 + '"'})
    assert r.status_code == 200 and r.content == CONTENT


@pytest.mark.parametrize("inm", ['W/"{sha}"', '"other", W/"{sha}"'])
async def test_if_none_match_is_the_weak_comparison_of_responses(
    store: FileSystemBlobStore, sha: str, inm: str
) -> None:
    """The blob answer and the CRUD answer share one matcher (engine.responses)."""
    header = inm.format(sha=sha)
    assert matches_etag(header, f'"{sha}"', weak=True)
    r = await get(store, sha, headers={"If-None-Match": header})
    assert r.status_code == 304


async def test_if_none_match_is_read_up_to_its_cap_only(
    store: FileSystemBlobStore, sha: str
) -> None:
    filler = ", ".join(f'"{i:08d}"' for i in range(1000))  # about 12 KiB
    late = await get(store, sha, headers={"If-None-Match": f'{filler}, "{sha}"'})
    assert late.status_code == 200 and late.content == CONTENT
    early = await get(store, sha, headers={"If-None-Match": f'"{sha}", {filler}'})
    assert early.status_code == 304


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=-100", 10140, 10239),
        ("bytes=10000-", 10000, 10239),
        ("bytes=-99999", 0, 10239),
        ("bytes=5-5", 5, 5),
    ],
)
async def test_range_gives_206(
    store: FileSystemBlobStore, sha: str, header: str, start: int, end: int
) -> None:
    r = await get(store, sha, headers={"Range": header})
    assert r.status_code == 206
    assert r.content == CONTENT[start : end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(CONTENT)}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.headers["etag"] == f'"{sha}"'


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-30000", "bytes=9-3"])
async def test_unsatisfiable_range_gives_416(
    store: FileSystemBlobStore, sha: str, header: str
) -> None:
    r = await get(store, sha, headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(CONTENT)}"
    assert r.headers["content-type"] == "application/problem+json"


async def test_multi_range_gives_full_200(store: FileSystemBlobStore, sha: str) -> None:
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(1000))
    r = await get(store, sha, headers={"Range": header})
    assert r.status_code == 200 and r.content == CONTENT


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        ('"{sha}"', 206),
        ('W/"{sha}"', 200),
        ('"stale"', 200),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 200),
    ],
)
async def test_if_range(store: FileSystemBlobStore, sha: str, if_range: str, status: int) -> None:
    headers = {"Range": "bytes=0-9", "If-Range": if_range.format(sha=sha)}
    r = await get(store, sha, headers=headers)
    assert r.status_code == status
    assert r.content == (CONTENT[:10] if status == 206 else CONTENT)


async def test_if_none_match_wins_over_range(store: FileSystemBlobStore, sha: str) -> None:
    r = await get(store, sha, headers={"Range": "bytes=0-9", "If-None-Match": f'"{sha}"'})
    assert r.status_code == 304


async def test_head_has_the_same_headers_and_no_body(store: FileSystemBlobStore, sha: str) -> None:
    full = await get(store, sha)
    head = await get(store, sha, method="HEAD", headers={"Range": "bytes=0-9"})
    assert head.status_code == 200
    assert head.content == b""
    assert dict(head.headers) == dict(full.headers)


@pytest.mark.parametrize(
    "mime", ["text/html", "image/svg+xml", "application/xml", "text/javascript"]
)
async def test_active_types_are_sandboxed_attachments(
    store: FileSystemBlobStore, sha: str, mime: str
) -> None:
    r = await get(store, sha, mime=mime)
    assert r.status_code == 200
    assert r.headers["content-disposition"] == "attachment"
    assert r.headers["content-security-policy"] == ACTIVE_CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    named = await get(store, sha, mime=mime, params={"name": "evil.html"})
    assert named.headers["content-disposition"].startswith('attachment; filename="evil.html"')


async def test_filename_makes_an_rfc6266_attachment(store: FileSystemBlobStore, sha: str) -> None:
    r = await get(store, sha, params={"name": "Отчёт\r\nX-Evil: 1.png", "loc": "/v3/action/blob/x"})
    value = r.headers["content-disposition"]
    assert value.startswith('attachment; filename="')
    assert "\r" not in value and "\n" not in value
    assert unquote(value.split("filename*=UTF-8''")[1]) == "Отчёт\r\nX-Evil: 1.png"
    assert "x-evil" not in r.headers
    assert r.headers["content-location"] == "/v3/action/blob/x"


async def test_header_unsafe_inputs_are_neutralised(store: FileSystemBlobStore, sha: str) -> None:
    r = await get(store, sha, params={"mime": "text/html\r\nX-A: b", "loc": "/a b\r\nX-B: c"})
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-location"] == "/a%20b%0D%0AX-B:%20c"


async def test_missing_blob_is_a_clean_404(store: FileSystemBlobStore) -> None:
    r = await get(store, "a" * 64, size=10)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


async def test_empty_blob(store: FileSystemBlobStore) -> None:
    blob = await store.put(chunks_of(b""))
    r = await get(store, blob.sha256, "text/plain")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == "0"
    ranged = await get(store, blob.sha256, headers={"Range": "bytes=0-"})
    assert ranged.status_code == 416


async def test_disconnect_mid_download_closes_the_reader(store: FileSystemBlobStore) -> None:
    blob = await store.put(chunks_of(b"\x01" * (CHUNK_SIZE * 8)))
    closed: list[bool] = []
    real_open = store.open

    async def tracking_open(sha256: str, start: int = 0, end: int | None = None):
        reader = await real_open(sha256, start, end)
        real_aclose = reader.aclose

        async def aclose() -> None:
            closed.append(True)
            await real_aclose()

        reader.aclose = aclose  # type: ignore[method-assign]
        return reader

    store.open = tracking_open  # type: ignore[method-assign]
    app = build_app(store, "application/octet-stream")
    sent: list[dict[str, object]] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, object]:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": f"/blob/{blob.sha256}", "raw_path": b"", "query_string": b"",
        "root_path": "", "headers": [], "client": ("t", 1), "server": ("t", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    assert closed == [True]
    body = sum(len(m.get("body", b"")) for m in sent if m["type"] == "http.response.body")  # type: ignore[arg-type]
    assert body < CHUNK_SIZE * 8  # the stream stopped early
