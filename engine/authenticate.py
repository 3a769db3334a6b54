"""Turn a request's credentials into a `Principal`, and apply the rate limit.

JWTs are verified before any database work; an API key costs one indexed query (prefix
lookup with its account), uncached, so a revoked key is refused on the very next request
in every worker. Every failure is the same 401 with `WWW-Authenticate`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa
from starlette.requests import HTTPConnection

from engine.auth.api_keys import extract_credentials, parse_api_key, verify_secret
from engine.errors import RateLimitedError, UnauthorizedError
from engine.logging import RATE_HEADERS_KEY
from engine.principal import Principal
from engine.ratelimit import rate_limit_headers
from engine.repository import translate_errors
from engine.requestctx import account_var, principal_var
from engine.runtime import Runtime, get_runtime
from models.base import utcnow

logger = logging.getLogger(__name__)
ACCOUNT_CACHE_SECONDS = 30
LAST_USED_INTERVAL = dt.timedelta(minutes=1)


async def authenticate(request: HTTPConnection) -> Principal:
    """The verified principal of `request`, or UnauthorizedError (401)."""
    rt = get_runtime(request)
    try:
        credentials = extract_credentials(request.headers.items())
        if credentials is None:
            raise UnauthorizedError("Send a bearer token or an API key")
        if credentials.kind == "jwt":
            principal = await _from_jwt(rt, credentials.value)
        else:
            principal = await _from_api_key(rt, credentials.value)
    except UnauthorizedError:
        await _limit(request, rt, "addr:" + _client_address(request))
        raise
    account_var.set(principal.account_public_id)
    principal_var.set(principal.log_name)
    await _limit(request, rt, "principal:" + principal.log_name)
    return principal


def _client_address(request: HTTPConnection) -> str:
    return request.client.host if request.client else "unknown"


async def _limit(request: HTTPConnection, rt: Runtime, key: str) -> None:
    decision = await rt.rate_limiter.hit(key)
    headers = rate_limit_headers(decision)
    request.scope.setdefault("state", {})[RATE_HEADERS_KEY] = headers
    if not decision.allowed:
        error = RateLimitedError(int(decision.retry_after or 1), "Rate limit exceeded; slow down")
        error.headers.update(headers)
        raise error


async def _from_jwt(rt: Runtime, token: str) -> Principal:
    claims = rt.jwt.verify(token)  # raises 401 before any database work
    if claims.role == "system":
        raise UnauthorizedError("Invalid or expired token")
    account_id = await _account_id(rt, claims.acct)
    if account_id is None:
        raise UnauthorizedError("Invalid or expired token")
    return Principal(
        kind="user",
        subject=claims.sub,
        account_id=account_id,
        account_public_id=claims.acct,
        role=claims.role,
    )


async def _account_id(rt: Runtime, public_id: str) -> int | None:
    key = f"acct:{public_id}"
    cached = await rt.cache.get(key)
    if cached is not None:
        return int(cached) if cached != b"-" else None
    account = rt.tables["account"]
    async with translate_errors(), rt.engine.connect() as conn:
        found = (
            await conn.execute(
                sa.select(account.c.id).where(
                    account.c.id_random == public_id, account.c.status == "active"
                )
            )
        ).scalar()
    await rt.cache.set(key, b"-" if found is None else str(found).encode(), ACCOUNT_CACHE_SECONDS)
    return None if found is None else int(found)


async def _from_api_key(rt: Runtime, key: str) -> Principal:
    parsed = parse_api_key(key)
    if parsed is None:
        raise UnauthorizedError()
    prefix, secret = parsed
    api_key = rt.tables["api_key"]
    account = rt.tables["account"]
    stmt = (
        sa.select(
            api_key.c.id,
            api_key.c.id_random,
            api_key.c.secret_hash,
            api_key.c.role,
            api_key.c.expires_at,
            api_key.c.revoked_at,
            api_key.c.last_used_at,
            api_key.c.account_id,
            account.c.id_random.label("account_public_id"),
            account.c.status.label("account_status"),
        )
        .select_from(api_key.outerjoin(account, account.c.id == api_key.c.account_id))
        .where(api_key.c.prefix == prefix)
    )
    async with translate_errors(), rt.engine.connect() as conn:
        row = (await conn.execute(stmt)).mappings().first()
    if row is None or not verify_secret(secret, row["secret_hash"]):
        raise UnauthorizedError()
    now = utcnow()
    if row["revoked_at"] is not None and row["revoked_at"] <= now:
        raise UnauthorizedError()
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise UnauthorizedError()
    is_system = row["account_id"] is None
    if is_system != (row["role"] == "system"):
        raise UnauthorizedError()
    if not is_system and row["account_status"] != "active":
        raise UnauthorizedError()
    await _touch(rt, row)
    return Principal(
        kind="api_key",
        subject=row["id_random"],
        account_id=row["account_id"],
        account_public_id=row["account_public_id"],
        role=row["role"],
    )


async def _touch(rt: Runtime, row: Any) -> None:
    """Write `last_used_at` at most once a minute per key, across every worker.

    The condition sits in the UPDATE, so concurrent requests and other processes cannot
    write it twice in the same minute; the common case (used this minute) costs nothing.
    """
    now = utcnow()
    last = row["last_used_at"]
    if last is not None and now - last < LAST_USED_INTERVAL:
        return
    api_key = rt.tables["api_key"]
    stale = sa.or_(
        api_key.c.last_used_at.is_(None), api_key.c.last_used_at < now - LAST_USED_INTERVAL
    )
    try:
        async with rt.engine.begin() as conn:
            await conn.execute(
                api_key.update().where(api_key.c.id == row["id"], stale).values(last_used_at=now)
            )
    except Exception:  # the request must not fail because bookkeeping did
        logger.warning("could not record api key use", exc_info=True)
