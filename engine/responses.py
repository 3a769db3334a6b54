"""JSON responses with the headers every authenticated answer carries (SPEC 5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.responses import Response

from engine.plans import PK_LABEL, VERSION_LABEL

_ENCODER = msgspec.json.Encoder()
PRIVATE_HEADERS = {"Cache-Control": "private, no-cache", "Vary": "Authorization, X-API-Key"}


def etag_for(version: int) -> str:
    return f'"{version}"'


def public_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A fetched row without the private labels (internal key, version copy)."""
    return {k: v for k, v in row.items() if k not in (PK_LABEL, VERSION_LABEL)}


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    response = Response(_ENCODER.encode(body), status_code=status, media_type="application/json")
    for key, value in PRIVATE_HEADERS.items():
        response.headers[key] = value
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def not_modified(etag: str) -> Response:
    response = Response(status_code=304)
    response.headers["ETag"] = etag
    for key, value in PRIVATE_HEADERS.items():
        response.headers[key] = value
    return response


def matches_etag(header: str | None, etag: str) -> bool:
    """RFC 9110 comparison of an If-None-Match / If-Match list against `etag`."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))
