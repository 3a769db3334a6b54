"""Opaque, tamper-evident keyset cursors bound to one query's filter and sort.

A cursor holds the sort values of the last row of a page (plus the internal tie-breaker
key), sealed with AES-GCM (`cryptography`): encrypted, so internal keys never show, and
authenticated together with the version byte and the query signature as associated data.
A cursor that was altered, forged, or minted for another query answers 400.

Layout (base64url, unpadded): version (1 byte) || nonce (12) || ciphertext || tag (16).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import functools
import hashlib
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.errors import BadRequestError

if TYPE_CHECKING:
    from engine.search.nodes import FilterNode, SortKey

#: Longest token accepted; longer ones are refused before any decoding work.
MAX_CURSOR_LENGTH = 2048
_VERSION = b"\x02"
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


@functools.lru_cache(maxsize=8)
def _cipher(key: bytes) -> AESGCM:
    if len(key) not in (16, 24, 32):
        raise ValueError("the cursor key must be an AES key: 16, 24 or 32 bytes")
    return AESGCM(key)


def _associated_data(sort_signature: str) -> bytes:
    return _VERSION + sort_signature.encode()


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
    cipher = _cipher(bytes(key))
    payload = msgspec.json.encode([_tag_value(v) for v in values])
    nonce = os.urandom(_NONCE_BYTES)
    sealed = cipher.encrypt(nonce, payload, _associated_data(sort_signature))
    return base64.urlsafe_b64encode(_VERSION + nonce + sealed).rstrip(b"=").decode()


def decode_cursor(token: str, *, sort_signature: str, key: bytes) -> list[Any]:
    """The values `encode_cursor` put in `token`; `BadRequestError` (400) for anything else."""
    cipher = _cipher(bytes(key))
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
    nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
    try:
        plain = cipher.decrypt(nonce, sealed, _associated_data(sort_signature))
    except InvalidTag:
        raise BadRequestError(_INVALID) from None
    try:
        decoded = msgspec.json.decode(plain)
        if not isinstance(decoded, list):
            raise ValueError("not a list")
        return [_untag_value(v) for v in decoded]
    except (msgspec.DecodeError, ValueError, TypeError):
        raise BadRequestError(_INVALID) from None
