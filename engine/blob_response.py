"""The HTTP answer for a blob: validators, conditional and range requests, safe headers.

Used by the blob and download actions (SPEC 6.2, 6.3) after they have checked that the
caller's account may see the content. The body is streamed from the store in chunks; the
blob is opened before the status line is sent, so a missing blob is still a clean 404.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from engine.blobs import BlobStore
from engine.filenames import content_disposition
from engine.mime import OCTET_STREAM, is_active_type
from engine.ranges import content_range, parse_range
from engine.responses import matches_etag

__all__ = [
    "ACTIVE_CSP",
    "CACHE_CONTROL",
    "blob_response",
    "is_range_current",
]

CACHE_CONTROL = "private, max-age=31536000, immutable"
ACTIVE_CSP = "default-src 'none'; sandbox"
VARY = "Authorization, X-API-Key"
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_MAX_VALIDATOR_HEADER = 8 * 1024
# Characters allowed as-is in Content-Location; anything else (CR/LF included) is escaped.
_URL_SAFE = "/:?#[]@!$&'()*+,;=%-._~"


class _BlobStream(StreamingResponse):
    """Opens the blob when the response is sent, before the status line, so that a blob
    missing from the store raises NotFoundError into the app's handlers, not mid-body."""

    def __init__(
        self,
        store: BlobStore,
        sha256: str,
        span: tuple[int, int],
        *,
        status_code: int,
        headers: Mapping[str, str],
        media_type: str,
    ) -> None:
        # StreamingResponse.__init__ minus the body: the body is the reader made in __call__.
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)
        self._store, self._sha256, self._span = store, sha256, span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reader = await self._store.open(self._sha256, *self._span)
        self.body_iterator = reader
        try:
            await super().__call__(scope, receive, send)
        finally:
            await reader.aclose()


def is_range_current(if_range: str | None, etag: str) -> bool:
    """`If-Range` needs a strong match; a date never matches (we send no Last-Modified)."""
    return if_range is None or if_range.strip() == etag


def blob_response(
    request: Request,
    store: BlobStore,
    *,
    sha256: str,
    size: int,
    mime_type: str,
    filename: str | None = None,
    content_location: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Response:
    """The response for a blob the caller may read.

    304 when `If-None-Match` matches; 206 with `Content-Range` for one `Range` on GET (unless
    `If-Range` is stale: then 200); RangeNotSatisfiableError (416, `Content-Range: bytes
    */size`) is raised for the app's problem handler. HEAD sends the headers only. Active
    types (HTML, SVG, XML, JavaScript) always go out as a sandboxed attachment. Other types
    are `attachment` when `filename` is given (SPEC 6.3), `inline` otherwise.
    `extra_headers` are added last.
    """
    etag = f'"{sha256}"'
    if not _MIME.fullmatch(mime_type or ""):
        mime_type = OCTET_STREAM
    headers: dict[str, str] = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "Vary": VARY,
        "X-Content-Type-Options": "nosniff",
    }
    if content_location is not None:
        headers["Content-Location"] = quote(content_location, safe=_URL_SAFE)
    if extra_headers:
        headers.update(extra_headers)

    # `If-None-Match` uses the weak comparison; the header is capped before it is parsed.
    if_none_match = request.headers.get("if-none-match")
    if request.method in ("GET", "HEAD") and matches_etag(
        if_none_match and if_none_match[:_MAX_VALIDATOR_HEADER], etag, weak=True
    ):
        return Response(status_code=304, headers=headers)

    headers["Accept-Ranges"] = "bytes"
    active = is_active_type(mime_type)
    if active:
        headers["Content-Security-Policy"] = ACTIVE_CSP
    if active or filename:
        headers["Content-Disposition"] = content_disposition(filename or "", "attachment")
    else:
        headers["Content-Disposition"] = "inline"
    if extra_headers:
        headers.update(extra_headers)

    start, end, status = 0, size - 1, 200
    # RFC 9110 §14.2: only GET has range semantics; HEAD describes the full 200.
    if request.method == "GET" and is_range_current(request.headers.get("if-range"), etag):
        selected = parse_range(request.headers.get("range"), size)
        if selected is not None:
            start, end = selected
            status = 206
            headers["Content-Range"] = content_range(start, end, size)
    headers["Content-Length"] = str(end - start + 1)

    if request.method == "HEAD" or size == 0:
        return Response(status_code=status, headers=headers, media_type=mime_type)
    return _BlobStream(
        store, sha256, (start, end), status_code=status, headers=headers, media_type=mime_type
    )
