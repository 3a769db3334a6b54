"""`create_app(settings, actions=...)`: the one place routes, middleware and handlers are wired."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Route

from engine.actions.base import Action, action_routes
from engine.blob_binding import bind_runtime_store
from engine.console import console_routes
from engine.crud import crud_endpoint
from engine.errors import AetherError
from engine.health import healthz, readyz, warn_if_not_migrated
from engine.legacy import LegacyRoutes
from engine.logging import RequestLogMiddleware
from engine.problems import handle_aether_error, handle_http_exception
from engine.realtime.service import Realtime
from engine.replicas import StickyWritesMiddleware
from engine.runtime import Runtime, build_runtime
from engine.settings import Settings
from engine.shutdown import watch_signals

logger = logging.getLogger(__name__)
CRUD_METHODS = ["GET", "HEAD", "POST", "PATCH", "DELETE", "PUT", "OPTIONS"]


def default_actions() -> list[Action]:
    from engine.actions import DEFAULT_ACTIONS

    return list(DEFAULT_ACTIONS)


def create_app(
    settings: Settings,
    *,
    actions: Sequence[Action] | None = None,
    runtime: Runtime | None = None,
) -> Starlette:
    """The ASGI app for `settings`. The registry is built here, so bad models fail now."""
    rt = runtime or build_runtime(settings)
    chosen = default_actions() if actions is None else list(actions)
    realtime = Realtime(rt)
    legacy = LegacyRoutes(rt) if rt.settings.legacy_routes else None  # AE_LEGACY_ROUTES
    rt.closers.append(realtime.close)
    if legacy is not None:
        rt.closers.append(legacy.close)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await rt.start()
        await bind_runtime_store(rt)
        await warn_if_not_migrated(rt)
        await realtime.start()
        settle_heap()
        try:
            with watch_signals(rt.shutdown):
                yield
        finally:
            await rt.close()  # the feed and the legacy store too (rt.closers)

    routes: list[BaseRoute] = [  # the busiest first: the router tries them in order
        Route("/v3/crud/{path:path}", crud_endpoint, methods=CRUD_METHODS),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        *extra_routes(rt, chosen),
        *realtime.routes(),
        *action_routes(chosen),
        *(legacy.routes() if legacy is not None else ()),
        *console_routes(settings),
    ]
    middleware = [Middleware(RequestLogMiddleware)]
    if rt.reads is not None:  # inside the log middleware: the principal is known there
        middleware.append(Middleware(StickyWritesMiddleware, router=rt.reads))
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=[
                    "GET",
                    "POST",
                    "PATCH",
                    "DELETE",
                    *(("PUT",) if legacy is not None else ()),  # the legacy partial update
                ],
                allow_headers=[
                    "Authorization",
                    "X-API-Key",
                    "Content-Type",
                    "If-Match",
                    "If-None-Match",
                    "Idempotency-Key",
                    "X-Request-ID",
                ],
                expose_headers=[
                    "ETag",
                    "Location",
                    "X-Request-ID",
                    "Retry-After",
                    *(("Deprecation", "Sunset", "Link") if legacy is not None else ()),
                ],
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            AetherError: handle_aether_error,
            HTTPException: handle_http_exception,
        },
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.state.realtime = realtime
    return app


def settle_heap() -> None:
    """Move what start-up built (modules, models, plans, compiled statements) out of the
    garbage collector's sight. Those objects live as long as the worker, yet every full
    collection walked them all: under load that was about 60 ms every half second, a
    pause every request in flight waited for."""
    gc.collect()
    gc.freeze()


def extra_routes(rt: Runtime, actions: Sequence[Action]) -> list[BaseRoute]:
    """Discovery and auth routes (OpenAPI, docs, login)."""
    from engine.auth.login import login_endpoint
    from engine.schemas import openapi_routes

    return [
        *openapi_routes(rt, actions),
        Route("/v3/auth/login", login_endpoint, methods=["POST"]),
    ]
