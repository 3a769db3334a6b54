"""Reading request bodies: size caps while streaming, no compressed bodies, strict decoding.

`read_body` refuses a body past its cap without reading the rest (413) and any
`Content-Encoding` (415: we never decompress). `decode_struct` decodes a small JSON body into
a msgspec Struct, mapping msgspec's errors to 400 (malformed) or 422 (with the path).
"""

from __future__ import annotations

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


async def read_body(request: Request, limit: int = MAX_JSON_BODY) -> bytes:
    """The request body, refused past `limit` bytes without reading the rest."""
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
        message, path = split_validation_error(exc)
        raise ValidationError.single(path.lstrip("."), message) from exc
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"malformed JSON: {exc}") from exc
