"""API keys (`ae_<prefix>_<secret>`) and reading credentials from request headers.

A key is 60 bits of public prefix (the row is found by it) and 256 bits of secret with a
CRC32 check, all in lowercase base32 so `_` splits it unambiguously and secret scanners can
spot it. Only `hash_secret(secret)` is stored; comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import UnauthorizedError

KEY_PREFIX = "ae"
PREFIX_LENGTH = 12
SECRET_BODY_LENGTH = 52  # 32 random bytes in base32, unpadded
CHECKSUM_LENGTH = 7  # CRC32 in base32 digits
SECRET_LENGTH = SECRET_BODY_LENGTH + CHECKSUM_LENGTH
MAX_KEY_LENGTH = 128
MAX_BEARER_LENGTH = 8 * 1024

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_KEY_RE = re.compile(rf"ae_([a-z2-7]{{{PREFIX_LENGTH}}})_([a-z2-7]{{{SECRET_LENGTH}}})")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_HEADER_ERROR = "Malformed Authorization header"


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A new key: `key` is shown once to its owner; store `prefix` and `secret_hash`."""

    key: str = field(repr=False)
    prefix: str
    secret_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presented: a bearer JWT or an API key (the value never in repr)."""

    kind: Literal["jwt", "api_key"]
    value: str = field(repr=False)


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _checksum(text: str) -> str:
    crc = zlib.crc32(text.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        digits.append(_ALPHABET[crc & 31])
        crc >>= 5
    return "".join(reversed(digits))


def generate_api_key() -> GeneratedKey:
    """A fresh random key with its public prefix and the hash to store."""
    prefix = _b32(secrets.token_bytes(10))[:PREFIX_LENGTH]
    body = _b32(secrets.token_bytes(32))
    secret = body + _checksum(f"{KEY_PREFIX}_{prefix}_{body}")
    return GeneratedKey(f"{KEY_PREFIX}_{prefix}_{secret}", prefix, hash_secret(secret))


def parse_api_key(key: str) -> tuple[str, str] | None:
    """`(prefix, secret)` of a well-formed key with a valid checksum, else None.

    >>> parse_api_key("ae_short_key") is None
    True
    """
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        return None
    match = _KEY_RE.fullmatch(key)
    if match is None:
        return None
    prefix, secret = match.groups()
    body, check = secret[:SECRET_BODY_LENGTH], secret[SECRET_BODY_LENGTH:]
    if not hmac.compare_digest(check, _checksum(f"{KEY_PREFIX}_{prefix}_{body}")):
        return None
    return prefix, secret


def hash_secret(secret: str) -> str:
    """SHA-256 hex of the secret; a fast hash suffices at 256 bits of entropy."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def verify_secret(secret: str, stored_hash: str) -> bool:
    """Whether `secret` hashes to `stored_hash`, compared in constant time."""
    # Bytes, because compare_digest refuses non-ASCII str (a corrupt stored value).
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode("utf-8"))


def _header_values(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    # Starlette's Headers.items() yields every raw pair, so a repeated header is seen twice.
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, list[str]] = {"authorization": [], "x-api-key": []}
    for name, value in pairs:
        lowered = name.lower()
        if lowered in found:
            found[lowered].append(value)
    return found


def extract_credentials(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
) -> Credentials | None:
    """The credentials of a request, None when it presents none.

    Reads `Authorization: Bearer <jwt>`, `Authorization: ApiKey <key>` and `X-API-Key`.
    A malformed or repeated header, an unknown scheme, or two different credentials raise
    `UnauthorizedError`. The values are not verified here.
    """
    found = _header_values(headers)
    if len(found["authorization"]) > 1 or len(found["x-api-key"]) > 1:
        raise UnauthorizedError(_HEADER_ERROR)
    from_header: Credentials | None = None
    if found["authorization"]:
        from_header = _parse_authorization(found["authorization"][0])
    api_key: str | None = None
    if found["x-api-key"]:
        api_key = found["x-api-key"][0].strip()
        if not api_key or len(api_key) > MAX_KEY_LENGTH:
            raise UnauthorizedError("Malformed X-API-Key header")
    if from_header is None:
        return Credentials("api_key", api_key) if api_key is not None else None
    if api_key is not None and (from_header.kind != "api_key" or from_header.value != api_key):
        raise UnauthorizedError("Conflicting credentials")
    return from_header


def _parse_authorization(raw: str) -> Credentials:
    scheme, _, value = raw.strip().partition(" ")
    value = value.strip()
    if not value or " " in value or "\t" in value:
        raise UnauthorizedError(_HEADER_ERROR)
    lowered = scheme.lower()
    if lowered == "bearer":
        if len(value) > MAX_BEARER_LENGTH or not _TOKEN68_RE.fullmatch(value):
            raise UnauthorizedError(_HEADER_ERROR)
        return Credentials("jwt", value)
    if lowered == "apikey":
        if len(value) > MAX_KEY_LENGTH:
            raise UnauthorizedError(_HEADER_ERROR)
        return Credentials("api_key", value)
    raise UnauthorizedError(_HEADER_ERROR)
