"""Render every failure as `application/problem+json` (RFC 9457).

One handler for the `AetherError` tree, one for Starlette's HTTP exceptions (routing 404 and
405), and one for anything unexpected: a bare 500 that names nothing internal.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from engine.errors import PROBLEM_BASE, AetherError
from engine.requestctx import current_request_id

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
_ENCODER = msgspec.json.Encoder()
_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem_response(
    status: int,
    *,
    type_: str,
    title: str,
    detail: str,
    instance: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": current_request_id(),
    }
    if errors:
        body["errors"] = errors
    response = Response(_ENCODER.encode(body), status_code=status, media_type=PROBLEM_CONTENT_TYPE)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def render_error(request: Request, exc: AetherError) -> Response:
    return problem_response(
        exc.status,
        type_=exc.type,
        title=exc.title,
        detail=exc.detail,
        instance=request.url.path,
        errors=exc.errors or None,
        headers=exc.headers,
    )


async def handle_aether_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AetherError)
    if exc.status >= 500:
        logger.warning("request failed: %s", exc.detail)
    return render_error(request, exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else title
    if exc.status_code == 404:
        detail = f"No route matches {request.method} {request.url.path}"
    return problem_response(
        exc.status_code,
        type_=PROBLEM_BASE + slug,
        title=title,
        detail=detail,
        instance=request.url.path,
        headers=dict(exc.headers or {}),
    )


def internal_error_response(path: str) -> Response:
    """The answer to anything unexpected: no internals, only the request id to quote."""
    return problem_response(
        500,
        type_=PROBLEM_BASE + "internal-error",
        title="Internal server error",
        detail="The server failed to answer this request; quote the request_id when reporting it.",
        instance=path,
    )
