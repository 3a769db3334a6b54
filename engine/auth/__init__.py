"""Credential checks: JWT verification and issuing, API keys, reading auth headers.

Pure building blocks; the middleware that turns them into a `Principal` (with the
database lookups for users and keys) lives elsewhere.
"""

from __future__ import annotations

from engine.auth.api_keys import (
    Credentials,
    GeneratedKey,
    extract_credentials,
    generate_api_key,
    hash_secret,
    parse_api_key,
    verify_secret,
)
from engine.auth.jwt import TOKEN_ERROR_DETAIL, Claims, JwtVerifier

__all__ = [
    "TOKEN_ERROR_DETAIL",
    "Claims",
    "Credentials",
    "GeneratedKey",
    "JwtVerifier",
    "extract_credentials",
    "generate_api_key",
    "hash_secret",
    "parse_api_key",
    "verify_secret",
]
