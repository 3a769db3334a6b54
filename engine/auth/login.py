"""`POST /v3/auth/login`: account slug, email and password in, a bearer JWT out.

Every failure (unknown account, unknown email, wrong password, inactive user) answers the
same 401 after the same argon2 verification cost.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from engine.bodies import decode_struct
from engine.errors import UnauthorizedError
from engine.repository import transaction
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
    decision = await rt.rate_limiter.hit(
        "login:" + (request.client.host if request.client else "?")
    )
    if not decision.allowed:
        from engine.errors import RateLimitedError

        raise RateLimitedError(int(decision.retry_after or 1))
    user, account = rt.tables["user"], rt.tables["account"]
    stmt = (
        sa.select(
            user.c.id,
            user.c.id_random,
            user.c.role,
            user.c.password_hash,
            user.c.is_active,
            account.c.id_random.label("account_public_id"),
            account.c.status,
        )
        .select_from(user.join(account, account.c.id == user.c.account_id))
        .where(account.c.slug == creds.account, user.c.email == creds.email)
    )
    async with transaction(rt.engine) as conn:
        row = (await conn.execute(stmt)).mappings().first()
        stored = row["password_hash"] if row else None
        ok = await run_in_threadpool(verify_password, creds.password, stored)
        if not ok or row is None or not row["is_active"] or row["status"] != "active":
            raise UnauthorizedError("Wrong account, email or password")
        await conn.execute(
            user.update().where(user.c.id == row["id"]).values(last_login_at=utcnow())
        )
    ttl = rt.settings.access_token_ttl
    token = rt.jwt.issue(
        sub=row["id_random"], acct=row["account_public_id"], role=row["role"], ttl_seconds=ttl
    )
    return json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": ttl},
        headers={"Cache-Control": "no-store"},
    )
