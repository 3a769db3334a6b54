"""The legacy routes: thin adapters that run a legacy call through the V3 CRUD handlers.

A call is authenticated as any other (401 first), mapped onto its V3 path and answered by
`engine.crud.serve_crud` (same checks, scoping, validation and problems). Where the legacy
API differed, one adapter each: a PUT runs as the PATCH it always was; a single object comes
back as `{"data": object}`; a list or search page as `{"data": [...], "has_more": bool}`
(plus `total` when asked) instead of V3's cursor `next`. Every answer, errors included, gets
the Deprecation, Sunset and successor Link headers; every call is logged as a warning and
counted per account, principal and route for `GET /v3/action/legacy-usage`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.actions.base import ActionContext, action_routes
from engine.authenticate import authenticate
from engine.crud import serve_crud
from engine.errors import AetherError, NotFoundError, ValidationError
from engine.legacy.calls import (
    LEGACY_PREFIXES,
    LegacyCall,
    deprecation_headers,
    parse_legacy_call,
)
from engine.legacy.usage import UsageStore, create_usage_store
from engine.openapi import OperationSpec
from engine.principal import Principal
from engine.problems import handle_aether_error
from engine.responses import json_response
from engine.runtime import Runtime, get_runtime

logger = logging.getLogger("aether.legacy")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
USAGE_PATH = "/legacy-usage"
_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()


class LegacyRoutes:
    """The `/crud` and `/v2/crud` routes and the usage endpoint; `create_app` mounts them
    only when `AE_LEGACY_ROUTES` is on, and closes them with the app."""

    def __init__(self, rt: Runtime, usage: UsageStore | None = None) -> None:
        self.sunset = rt.settings.legacy_sunset
        self.usage = usage if usage is not None else create_usage_store(rt.settings)

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        for prefix in LEGACY_PREFIXES:
            endpoint = self._endpoint(prefix)
            routes.append(Route(prefix, endpoint, methods=METHODS))
            routes.append(Route(prefix + "/{rest:path}", endpoint, methods=METHODS))
        return [*routes, *action_routes([UsageAction(self.usage)])]

    async def close(self) -> None:
        await self.usage.close()

    def _endpoint(self, prefix: str) -> Callable[[Request], Awaitable[Response]]:
        depth = prefix.count("/")

        async def endpoint(request: Request) -> Response:
            rt = get_runtime(request)
            raw = request.scope.get("raw_path") or request.scope["path"].encode()
            parts = raw.decode("latin-1").split("?", 1)[0].split("/")
            rest = "/".join(["", *parts[depth + 1 :]]) if len(parts) > depth + 1 else ""
            call = parse_legacy_call(prefix, request.method, rest, rt.registry)
            principal: Principal | None = None
            try:
                principal = await authenticate(request)
                response = await self._serve(request, principal, call)
            except AetherError as exc:
                response = await handle_aether_error(request, exc)
            finally:
                await self._note(principal, call)
            return _with_headers(response, deprecation_headers(call, self.sunset))

        return endpoint

    async def _serve(self, request: Request, principal: Principal, call: LegacyCall) -> Response:
        if call.segments is None:
            raise NotFoundError(f"No route matches {call.method} {request.url.path}")
        if call.method != call.v3_method:
            request = Request({**request.scope, "method": call.v3_method}, request.receive)
        response = await serve_crud(request, principal, call.segments)
        return _enveloped(response, call)

    async def _note(self, principal: Principal | None, call: LegacyCall) -> None:
        who = principal.log_name if principal is not None else "anonymous"
        logger.warning(
            "legacy route %s called by %s; its successor is %s", call.route, who, call.successor
        )
        if principal is not None and principal.account_public_id is not None:
            await self.usage.record(principal.account_public_id, principal.log_name, call.route)


def _enveloped(response: Response, call: LegacyCall) -> Response:
    """A V3 success body in its legacy form (errors, 204 and 304 pass unchanged)."""
    if response.status_code not in (200, 201) or response.media_type != "application/json":
        return response
    body = _DECODER.decode(response.body)
    if call.kind == "item" or (call.kind == "collection" and call.v3_method == "POST"):
        legacy: dict[str, Any] = {"data": body}
    else:
        legacy = {"data": body["data"], "has_more": body["next"] is not None}
        if "total" in body:
            legacy["total"] = body["total"]
    headers = {
        k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
    }
    return Response(
        _ENCODER.encode(legacy),
        status_code=response.status_code,
        headers=headers,
        media_type="application/json",
    )


def _with_headers(response: Response, headers: dict[str, str]) -> Response:
    allow = response.headers.get("allow")
    if allow is not None and "PATCH" in allow and "PUT" not in allow:
        response.headers["Allow"] = allow + ", PUT"  # PUT is the legacy PATCH
    link = response.headers.get("link")
    for key, value in headers.items():
        response.headers[key] = f"{link}, {value}" if key == "Link" and link else value
    return response


USAGE_SPEC = OperationSpec(
    method="GET",
    path="/v3/action" + USAGE_PATH,
    summary="Who still calls the legacy routes",
    description=(
        "Calls of the deprecated `/crud` and `/v2/crud` routes in your account, per principal"
        " and route, with the V3 successor of each route, most calls first. Served only while"
        " `AE_LEGACY_ROUTES` is on. Counts are shared by every worker when Redis is configured"
        " (and kept 90 days after the account's last legacy call), per process otherwise."
    ),
    operation_id="action.legacy_usage.get",
    min_role="admin",
    responses={
        "200": {
            "description": "The counts.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "data": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": [
                                        "principal",
                                        "route",
                                        "successor",
                                        "calls",
                                        "last_called_at",
                                    ],
                                    "properties": {
                                        "principal": {
                                            "type": "string",
                                            "description": "`api_key:<id>` or `user:<id>`.",
                                        },
                                        "route": {"type": "string"},
                                        "successor": {"type": "string"},
                                        "calls": {"type": "integer", "minimum": 1},
                                        "last_called_at": {"type": "string", "format": "date-time"},
                                    },
                                },
                            }
                        },
                    }
                }
            },
        }
    },
    errors=(401, 403, 422, 429),
)


class UsageAction:
    """`GET /v3/action/legacy-usage` (admin and above): the account's legacy call counts."""

    method = "GET"
    path = USAGE_PATH
    min_role = "admin"
    openapi = USAGE_SPEC

    def __init__(self, usage: UsageStore) -> None:
        self.usage = usage

    async def handle(self, ctx: ActionContext, request: Request) -> Response:
        if request.query_params:
            raise ValidationError(
                [{"path": k, "message": "unknown query parameter"} for k in request.query_params]
            )
        account = ctx.principal.account_public_id
        rows = await self.usage.read(account) if account is not None else []
        return json_response({"data": rows})
