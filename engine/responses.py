"""JSON responses with the headers every authenticated answer carries (SPEC 5)."""

from __future__ import annotations

import re
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
    return Response(
        _ENCODER.encode(body),
        status_code=status,
        headers={**PRIVATE_HEADERS, **headers} if headers else PRIVATE_HEADERS,
        media_type="application/json",
    )


def not_modified(etag: str) -> Response:
    response = Response(status_code=304)
    response.headers["ETag"] = etag
    for key, value in PRIVATE_HEADERS.items():
        response.headers[key] = value
    return response


_ETAG_RE = re.compile(r'\s*(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"\s*')


def valid_etag_list(header: str) -> bool:
    """Whether `header` is `*` or a comma-separated list of (weak or strong) entity tags."""
    if header.strip() == "*":
        return True
    return all(_ETAG_RE.fullmatch(part) for part in header.split(","))


def matches_etag(header: str | None, etag: str, *, weak: bool = False) -> bool:
    """RFC 9110 comparison of an If-Match (strong, the default) or If-None-Match
    (`weak=True`) list against our strong `etag`.

    Strong comparison: a weak tag (`W/"3"`) matches nothing, as If-Match requires.
    """
    if not header:
        return False
    if header.strip() == "*":
        return True
    for raw in header.split(","):
        tag = raw.strip()
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        if tag == etag:
            return True
    return False
