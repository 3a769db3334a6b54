"""`POST /v3/auth/login`: account slug, email and password in, a bearer JWT out.

Every failure (unknown account, unknown email, wrong password, inactive user) answers the
same 401 after the same argon2 verification cost. Failed logins have their own, stricter
limit per account and email and per address (`LoginLimiter`): past it, 429 until the window
ends, right password or not. The user row is read on a connection that is released before
the password is verified in a worker thread; `last_login_at` is written afterwards.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from engine.bodies import decode_struct
from engine.errors import RateLimitedError, UnauthorizedError
from engine.repository import transaction, translate_errors
from engine.responses import json_response
from engine.runtime import get_runtime
from models.base import utcnow
from models.security import verify_password
from registry.jsonschema import NO_NUL_PATTERN
from registry.types import python_pattern

MAX_BODY = 8 * 1024


#: No NUL: no database compares it as the client meant (SPEC 8); the OpenAPI schema says so.
_NO_NUL = python_pattern(NO_NUL_PATTERN)


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    account: Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=_NO_NUL)]
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=_NO_NUL)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024, pattern=_NO_NUL)]


_DECODER = msgspec.json.Decoder(LoginRequest)


async def login_endpoint(request: Request) -> Response:
    rt = get_runtime(request)
    creds = await decode_struct(request, _DECODER, MAX_BODY)
    address = request.client.host if request.client else "?"
    decision = await rt.rate_limiter.hit("login:" + address)
    if not decision.allowed:
        raise RateLimitedError(int(decision.retry_after or 1))
    wait = await rt.login_limiter.admit(creds.account, creds.email, address)
    if wait:
        raise RateLimitedError(wait, "Too many failed logins; try again later")
    user, account = rt.tables["user"], rt.tables["account"]
    stmt = (
        sa.select(
            user.c.id,
            user.c.id_random,
            user.c.role,
            user.c.password_hash,
            user.c.is_active,
            user.c.account_id,
            account.c.id_random.label("account_public_id"),
            account.c.status,
        )
        .select_from(user.join(account, account.c.id == user.c.account_id))
        .where(account.c.slug == creds.account, user.c.email == creds.email)
    )
    async with translate_errors(), rt.engine.connect() as conn:
        row = (await conn.execute(stmt)).mappings().first()
    # The connection is back in the pool while argon2 runs (tens of milliseconds).
    stored = row["password_hash"] if row else None
    ok = await run_in_threadpool(verify_password, creds.password, stored)
    if not ok or row is None or not row["is_active"] or row["status"] != "active":
        await rt.login_limiter.failed(address)
        raise UnauthorizedError("Wrong account, email or password")
    await rt.login_limiter.succeeded(creds.account, creds.email)
    async with transaction(rt.engine) as conn:
        await conn.execute(
            user.update()
            .where(user.c.account_id == row["account_id"], user.c.id == row["id"])
            .values(last_login_at=utcnow())
        )
    ttl = rt.settings.access_token_ttl
    token = rt.jwt.issue(
        sub=row["id_random"], acct=row["account_public_id"], role=row["role"], ttl_seconds=ttl
    )
    return json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": ttl},
        headers={"Cache-Control": "no-store"},
    )
