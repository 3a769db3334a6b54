"""Opaque, tamper-evident keyset cursors bound to one query's filter and sort.

A cursor holds the sort values of the last row of a page (plus the internal tie-breaker
key). The values are encrypted (an HMAC-SHA256 keystream, so internal keys never show)
and authenticated with HMAC-SHA256 over the query signature: a cursor that was altered,
forged, or minted for another query answers 400.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from engine.errors import BadRequestError

if TYPE_CHECKING:
    from engine.search.nodes import FilterNode, SortKey

#: Longest token accepted; longer ones are refused before any decoding work.
MAX_CURSOR_LENGTH = 2048
_VERSION = b"\x01"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
_INVALID = "invalid cursor: it was altered, has expired, or belongs to another query"


def query_signature(type_name: str, node: FilterNode, sort: Sequence[SortKey]) -> str:
    """A hash of the normalised filter and sort of a query on `type_name`."""
    from engine.search.nodes import render_filter

    canonical = msgspec.json.encode(
        {
            "type": str(type_name),
            "filter": render_filter(node),
            "sort": [("-" if k.descending else "") + str(k.field.name) for k in sort],
        },
        order="sorted",
    )
    return hashlib.sha256(canonical).hexdigest()[:32]


def _keys(key: bytes) -> tuple[bytes, bytes]:
    if len(key) < 16:
        raise ValueError("the cursor key must be at least 16 bytes")
    enc = hmac.new(key, b"aether-cursor-encrypt", hashlib.sha256).digest()
    mac = hmac.new(key, b"aether-cursor-authenticate", hashlib.sha256).digest()
    return enc, mac


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = (length + 31) // 32
    stream = b"".join(
        hmac.new(key, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest() for i in range(blocks)
    )
    return stream[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def _tag_value(value: Any) -> Any:
    # JSON keeps None, bools, ints and strings; the rest are tagged so they come back typed.
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return ["f", repr(value)]
    if isinstance(value, dt.datetime):
        return ["t", value.isoformat()]
    if isinstance(value, dt.date):
        return ["d", value.isoformat()]
    if isinstance(value, decimal.Decimal):
        return ["D", str(value)]
    raise TypeError(f"cannot put a {type(value).__name__} in a cursor")


def _untag_value(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    tag, text = value
    if tag == "f":
        return float(text)
    if tag == "t":
        return dt.datetime.fromisoformat(text)
    if tag == "d":
        return dt.date.fromisoformat(text)
    if tag == "D":
        return decimal.Decimal(text)
    raise ValueError(tag)


def encode_cursor(values: Sequence[Any], *, sort_signature: str, key: bytes) -> str:
    """An opaque token for `values` (the sort values of the last row, tie-breaker last)."""
    enc_key, mac_key = _keys(key)
    payload = msgspec.json.encode([_tag_value(v) for v in values])
    nonce = os.urandom(_NONCE_BYTES)
    body = _xor(payload, _keystream(enc_key, nonce, len(payload)))
    tag = _mac(mac_key, sort_signature, nonce + body)
    return base64.urlsafe_b64encode(_VERSION + nonce + body + tag).rstrip(b"=").decode()


def _mac(mac_key: bytes, sort_signature: str, data: bytes) -> bytes:
    message = _VERSION + sort_signature.encode() + b"\x00" + data
    return hmac.new(mac_key, message, hashlib.sha256).digest()[:_TAG_BYTES]


def decode_cursor(token: str, *, sort_signature: str, key: bytes) -> list[Any]:
    """The values `encode_cursor` put in `token`; `BadRequestError` (400) for anything else."""
    enc_key, mac_key = _keys(key)
    if not isinstance(token, str) or not token or len(token) > MAX_CURSOR_LENGTH:
        raise BadRequestError(_INVALID)
    if _TOKEN_RE.fullmatch(token) is None:
        raise BadRequestError(_INVALID)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise BadRequestError(_INVALID) from None
    if len(raw) < 1 + _NONCE_BYTES + _TAG_BYTES or raw[:1] != _VERSION:
        raise BadRequestError(_INVALID)
    nonce, body, tag = (
        raw[1 : 1 + _NONCE_BYTES],
        raw[1 + _NONCE_BYTES : -_TAG_BYTES],
        raw[-_TAG_BYTES:],
    )
    if not hmac.compare_digest(tag, _mac(mac_key, sort_signature, nonce + body)):
        raise BadRequestError(_INVALID)
    try:
        decoded = msgspec.json.decode(_xor(body, _keystream(enc_key, nonce, len(body))))
        if not isinstance(decoded, list):
            raise ValueError("not a list")
        return [_untag_value(v) for v in decoded]
    except (msgspec.DecodeError, ValueError, TypeError):
        raise BadRequestError(_INVALID) from None
