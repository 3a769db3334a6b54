"""Reading request bodies: JSON media types, size caps while streaming, strict decoding.

`read_body` refuses a declared `Content-Type` other than JSON (415: `application/json`,
`application/*+json`, parameters allowed, or none at all), any `Content-Encoding` (415: we
never decompress) and a body past its cap without reading the rest (413). `decode_struct`
decodes a small JSON body into a msgspec Struct: text that is not JSON is 400 whatever its
shape, JSON of the wrong shape 422 with the path (syntax first, shape second).
"""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

from engine.errors import (
    BadRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from registry.types import split_validation_error

MAX_JSON_BODY = 1024 * 1024
T = TypeVar("T")
ACCEPTED_MEDIA_TYPES = "application/json or application/*+json"
#: `type/subtype` as RFC 9110 spells a media type (tokens), parameters after a `;`.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_JSON_MEDIA_TYPE = re.compile(rf"application/(?:json|{_TOKEN}\+json)", re.IGNORECASE)


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a `Content-Type` value (None when absent) declares a JSON body.

    >>> [is_json_media_type(v) for v in (None, "application/json; charset=utf-8", "text/plain")]
    [True, True, False]
    """
    if content_type is None:
        return True
    media_type = content_type.split(";", 1)[0].strip()
    return _JSON_MEDIA_TYPE.fullmatch(media_type) is not None


def check_json_media_type(request: Request) -> None:
    """415 unless the request declares a JSON body or no `Content-Type` at all."""
    declared = request.headers.get("content-type")
    if not is_json_media_type(declared):
        shown = (declared or "")[:100]
        raise UnsupportedMediaTypeError(
            f"The body must be {ACCEPTED_MEDIA_TYPES} (or have no Content-Type), not {shown!r}"
        )


def check_json_syntax(body: bytes) -> None:
    """400 when `body` is not JSON text at all, whatever shape was expected of it."""
    try:
        msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"malformed JSON: {exc}") from exc


async def read_body(request: Request, limit: int = MAX_JSON_BODY) -> bytes:
    """The JSON request body, refused past `limit` bytes without reading the rest."""
    check_json_media_type(request)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaTypeError("Compressed request bodies are not accepted")
    too_large = f"The body is limited to {limit} bytes"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(too_large)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(too_large)
            chunks.append(chunk)
    except ClientDisconnect as exc:  # nobody is listening; say so in the request log line
        raise BadRequestError("The client disconnected before sending the whole body") from exc
    return b"".join(chunks)


async def decode_struct(request: Request, decoder: msgspec.json.Decoder[T], limit: int) -> T:
    """The body decoded strictly by `decoder` (unknown fields refused by the Struct)."""
    body = await read_body(request, limit)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        check_json_syntax(body)  # a type error may come before the text is even finished
        message, path = split_validation_error(exc)
        raise ValidationError.single(path.lstrip("."), message) from exc
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"malformed JSON: {exc}") from exc
