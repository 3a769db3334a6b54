"""`POST /v3/action/api_key` (SPEC 6.4): make a key for the caller's account, shown once."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from engine.actions import specs
from engine.actions.base import ActionContext
from engine.bodies import decode_struct
from engine.errors import ForbiddenError, ValidationError
from engine.plans import VERSION_LABEL
from engine.provisioning import insert_api_key
from engine.realtime.writes import note_write
from engine.repository import fetch_one, transaction
from engine.responses import etag_for, json_response, public_row
from models.base import utcnow
from registry.descriptors import TenantRole, role_at_least
from registry.jsonschema import NO_NUL_PATTERN
from registry.types import python_pattern

MAX_BODY = 16 * 1024


class ApiKeyRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=100, pattern=python_pattern(NO_NUL_PATTERN))
    ]
    role: TenantRole = "viewer"
    expires_at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None


_DECODER = msgspec.json.Decoder(ApiKeyRequest)


class CreateApiKey:
    method = "POST"
    path = "/api_key"
    min_role = "admin"
    openapi: Any = specs.API_KEY

    async def handle(self, ctx: ActionContext, request: Request) -> Response:
        spec = await decode_struct(request, _DECODER, MAX_BODY)
        if not role_at_least(ctx.principal.role, spec.role):
            raise ForbiddenError("A key cannot have a higher role than the caller's")
        if spec.expires_at is not None and spec.expires_at <= utcnow():
            raise ValidationError.single("expires_at", "must be in the future")
        if ctx.principal.account_id is None:
            raise ForbiddenError("System keys are made with `aether create-api-key --system`")
        account_id = ctx.principal.account_id
        rt = ctx.runtime
        plan = rt.plans["api_key"]
        async with transaction(rt.engine) as conn:
            made = await insert_api_key(
                conn,
                rt.tables,
                account_id=account_id,
                name=spec.name,
                role=spec.role,
                expires_at=spec.expires_at,
            )
            row = await fetch_one(
                conn, plan.scoped(plan.select().where(plan.pk == made.pk), account_id)
            )
            assert row is not None
            note_write(conn, plan, ctx.principal.account_public_id, "create", public_row(row))
        body_out = {**public_row(row), "key": made.key}
        return json_response(
            body_out,
            status=201,
            headers={
                "ETag": etag_for(row[VERSION_LABEL]),
                "Location": f"/v3/crud/api_key/{row['id']}",
                "Cache-Control": "no-store",
            },
        )
