"""Turn a request's credentials into a `Principal`, and apply the rate limit.

JWTs are verified before any database work. What the database says of a credential (an API
key's row and its account; a token user's standing and account) is read by one indexed
query and kept in the `PrincipalCache` for a few seconds, so a request by a recently seen
caller costs no SQL. Revoking, expiring or deleting a key, deactivating or demoting a user,
or suspending an account clears that cache (see `PrincipalCache` for how fast each worker
learns of it). Every failure is the same 401 with `WWW-Authenticate`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import HTTPConnection

from engine.auth.api_keys import Credentials, extract_credentials, parse_api_key, verify_secret
from engine.errors import RateLimitedError, UnauthorizedError
from engine.logging import RATE_HEADERS_KEY
from engine.principal import Principal
from engine.ratelimit import rate_limit_headers
from engine.repository import autocommit, read
from engine.requestctx import account_var, principal_var
from engine.runtime import Runtime, get_runtime
from models.base import utcnow
from registry.descriptors import role_at_least

logger = logging.getLogger(__name__)
LAST_USED_INTERVAL = dt.timedelta(minutes=1)


class KeyRecord(msgspec.Struct, kw_only=True):
    """What the database said of an API key, as the principal cache keeps it."""

    key_id: int
    account_id: int | None
    secret_hash: str
    principal: Principal | None  # None: the key is refused whatever the secret
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None


class Standing(msgspec.Struct, frozen=True):
    """A token's account (internal key) and its user's role; None: the token is refused."""

    account_id: int | None
    role: str | None


async def authenticate(request: HTTPConnection) -> Principal:
    """The verified principal of `request`, or UnauthorizedError (401)."""
    rt = get_runtime(request)
    try:
        credentials = extract_credentials(request.headers.items())
        if credentials is None:
            raise UnauthorizedError("Send a bearer token or an API key")
        principal = await verify_credentials(rt, credentials)
    except UnauthorizedError:
        await _limit(request, rt, "addr:" + _client_address(request))
        raise
    account_var.set(principal.account_public_id)
    principal_var.set(principal.log_name)
    await _limit(request, rt, "principal:" + principal.log_name)
    return principal


async def verify_credentials(rt: Runtime, credentials: Credentials) -> Principal:
    """The principal `credentials` stand for, or UnauthorizedError (401); no rate limit
    (a live connection checking its credentials again is not a new request)."""
    if credentials.kind == "jwt":
        return await _from_jwt(rt, credentials.value)
    return await _from_api_key(rt, credentials.value)


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
    key = f"u:{claims.acct}:{claims.sub}"
    standing: Standing | None = rt.principals.get(key)
    if standing is None:
        standing = await _standing(rt, claims.acct, claims.sub)
        rt.principals.put(key, standing)
    if standing.account_id is None:
        raise UnauthorizedError("Invalid or expired token")
    role = claims.role
    if standing.role is not None and not role_at_least(standing.role, role):
        role = standing.role  # demoted since the token was signed: the lower role holds
    return Principal(
        kind="user",
        subject=claims.sub,
        account_id=standing.account_id,
        account_public_id=claims.acct,
        role=role,
    )


async def _standing(rt: Runtime, account_public_id: str, subject: str) -> Standing:
    """The token's account, if active, and its user's current role, if the subject is a user.

    A subject that is no user of the account (a token minted by `aether token`) keeps the
    role it was signed with; a user that is no longer active is refused.
    """
    account = rt.tables["account"]
    user = rt.tables["user"]
    stmt = (
        sa.select(account.c.id, user.c.role, user.c.is_active, user.c.id.label("user"))
        .select_from(
            account.outerjoin(
                user, sa.and_(user.c.account_id == account.c.id, user.c.id_random == subject)
            )
        )
        .where(account.c.id_random == account_public_id, account.c.status == "active")
    )

    async def work(conn: AsyncConnection) -> Any:
        return (await conn.execute(stmt)).first()

    row = await read(rt.reader, work)
    if row is None or (row.user is not None and not row.is_active):
        return Standing(None, None)
    return Standing(int(row.id), row.role if row.user is not None else None)


def _key_statement(rt: Runtime) -> sa.Select[Any]:
    api_key = rt.tables["api_key"]
    account = rt.tables["account"]
    return (
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
        .where(api_key.c.prefix == sa.bindparam("prefix"))
    )


async def _from_api_key(rt: Runtime, key: str) -> Principal:
    # The exact key seen verified within the cache's lifetime: no parsing, no hashing.
    verified: KeyRecord | None = rt.principals.get("s:" + key)
    record = verified
    if record is None:
        parsed = parse_api_key(key)
        if parsed is None:
            raise UnauthorizedError()
        prefix, secret = parsed
        cache_key = f"k:{prefix}"
        record = rt.principals.get(cache_key)
        if record is None:
            record = await _load_key(rt, prefix)
            if record is None:
                raise UnauthorizedError()
            rt.principals.put(cache_key, record)
        if record.principal is None or not verify_secret(secret, record.secret_hash):
            raise UnauthorizedError()
        rt.principals.put("s:" + key, record)
    principal = record.principal
    assert principal is not None
    now = utcnow()
    if record.expires_at is not None and record.expires_at <= now:
        raise UnauthorizedError()
    await _touch(rt, record, now)
    return principal


async def _load_key(rt: Runtime, prefix: str) -> KeyRecord | None:
    stmt = _key_statement(rt)

    async def work(conn: AsyncConnection) -> Any:
        return (await conn.execute(stmt, {"prefix": prefix})).mappings().first()

    row = await read(rt.reader, work)
    if row is None:
        return None
    now = utcnow()
    refused = row["revoked_at"] is not None and row["revoked_at"] <= now
    is_system = row["account_id"] is None
    refused = refused or is_system != (row["role"] == "system")
    refused = refused or (not is_system and row["account_status"] != "active")
    principal = Principal(
        kind="api_key",
        subject=row["id_random"],
        account_id=row["account_id"],
        account_public_id=row["account_public_id"],
        role=row["role"],
    )
    return KeyRecord(
        key_id=int(row["id"]),
        account_id=row["account_id"],
        secret_hash=row["secret_hash"],
        principal=None if refused else principal,
        # A revocation set in the future takes effect then, like an expiry.
        expires_at=min(
            (t for t in (row["expires_at"], row["revoked_at"]) if t is not None), default=None
        ),
        last_used_at=row["last_used_at"],
    )


def _same_account(api_key: sa.Table, record: KeyRecord) -> sa.ColumnElement[bool]:
    column = api_key.c.account_id
    return column.is_(None) if record.account_id is None else column == record.account_id


async def _touch(rt: Runtime, record: KeyRecord, now: dt.datetime) -> None:
    """Write `last_used_at` at most once a minute per key, across every worker.

    The condition sits in the UPDATE, so concurrent requests and other processes cannot
    write it twice in the same minute; the common case (used this minute, as the cached
    record says) costs nothing.
    """
    last = record.last_used_at
    if last is not None and now - last < LAST_USED_INTERVAL:
        return
    record.last_used_at = now
    api_key = rt.tables["api_key"]
    stale = sa.or_(
        api_key.c.last_used_at.is_(None), api_key.c.last_used_at < now - LAST_USED_INTERVAL
    )
    try:
        async with autocommit(rt.reader) as conn:
            await conn.execute(
                api_key.update()
                .where(api_key.c.id == record.key_id, _same_account(api_key, record), stale)
                .values(last_used_at=now)
            )
    except Exception:  # the request must not fail because bookkeeping did
        logger.warning("could not record api key use", exc_info=True)
