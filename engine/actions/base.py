"""The action plugin protocol: a route-level plugin under `/v3/action`.

An action declares `method`, `path` and `min_role`, and `handle(ctx, request)`. The engine
authenticates the caller and checks the role before the action runs; the action gets an
`ActionContext` with the principal, the runtime's database engine, blob store and cache.
Actions never import the app; they are passed to `create_app(settings, actions=[...])`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.authenticate import authenticate
from engine.errors import ForbiddenError
from engine.principal import Principal
from engine.runtime import Runtime, get_runtime

ACTION_PREFIX = "/v3/action"


@dataclass(frozen=True)
class ActionContext:
    """What an action may use: who calls, and the process's shared resources."""

    principal: Principal
    runtime: Runtime
    logger: logging.Logger

    @property
    def account_id(self) -> int | None:
        return self.principal.account_id


class Action(Protocol):
    method: str
    path: str  # below /v3/action, e.g. "/event/{event_id}/upload"
    min_role: str
    openapi: Any  # an engine.openapi.OperationSpec describing the route, or None

    async def handle(self, ctx: ActionContext, request: Request) -> Response: ...


Handler = Callable[[ActionContext, Request], Awaitable[Response]]


@dataclass(frozen=True)
class FunctionAction:
    """An action from a plain async function (see `action()`)."""

    method: str
    path: str
    min_role: str
    func: Handler
    openapi: Any = None

    async def handle(self, ctx: ActionContext, request: Request) -> Response:
        return await self.func(ctx, request)


def action(
    method: str, path: str, *, min_role: str = "viewer", openapi: Any = None
) -> Callable[[Handler], FunctionAction]:
    """Wrap an async function `(ctx, request) -> Response` as an action."""

    def wrap(func: Handler) -> FunctionAction:
        return FunctionAction(method.upper(), path, min_role, func, openapi)

    return wrap


def action_routes(actions: Sequence[Action]) -> list[BaseRoute]:
    """One Starlette route per action, each authenticating and checking the role first."""
    routes: list[BaseRoute] = []
    for act in actions:
        routes.append(Route(ACTION_PREFIX + act.path, _endpoint(act), methods=[act.method]))
    return routes


def _endpoint(act: Action) -> Callable[[Request], Awaitable[Response]]:
    log = logging.getLogger(f"aether.action.{act.path.strip('/').replace('/', '.')}")

    async def endpoint(request: Request) -> Response:
        principal = await authenticate(request)
        if not principal.has_role(act.min_role) or (
            principal.is_system and act.min_role != "system"
        ):
            raise ForbiddenError(f"This action needs the role {act.min_role!r} in an account")
        runtime: Runtime = get_runtime(request)
        return await act.handle(ActionContext(principal, runtime, log), request)

    return endpoint
