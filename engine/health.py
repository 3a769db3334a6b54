"""`/healthz` (the process answers) and `/readyz` (database reachable and migrated; Redis)."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response

from engine.migrate import is_at_head
from engine.responses import json_response
from engine.runtime import get_runtime

logger = logging.getLogger(__name__)
READY_TIMEOUT_SECONDS = 3.0


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request) -> Response:
    rt = get_runtime(request)
    checks: dict[str, str] = {}
    ready = True
    try:
        at_head = await asyncio.wait_for(is_at_head(rt.reader, rt.settings), READY_TIMEOUT_SECONDS)
        checks["database"] = "ok" if at_head else "not migrated: run `aether migrate`"
        ready = at_head
    except Exception as exc:  # any failure means "not ready", never a 500
        logger.warning("readiness: database check failed: %s", type(exc).__name__)
        checks["database"] = "unreachable"
        ready = False
    if rt.settings.redis_url:
        healthy = await rt.cache.ping()
        checks["redis"] = "ok" if healthy else "degraded: serving from process memory"
    else:
        checks["redis"] = "not configured: process memory"
    status = 200 if ready else 503
    headers = {"Cache-Control": "no-store"}
    if not ready:
        headers["Retry-After"] = "5"
    return json_response(
        {"status": "ready" if ready else "not ready", "checks": checks}, status, headers
    )
