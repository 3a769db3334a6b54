"""`/healthz` (the process answers) and `/readyz` (database reachable and migrated; Redis)."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response

from engine.db import ping
from engine.errors import NOT_MIGRATED
from engine.migrate import is_migrated
from engine.responses import json_response
from engine.runtime import Runtime, get_runtime

logger = logging.getLogger(__name__)
READY_TIMEOUT_SECONDS = 3.0


async def warn_if_not_migrated(rt: Runtime) -> None:
    """Say at start-up when the database lags the models (requests would answer 503)."""
    try:
        migrated = await asyncio.wait_for(
            is_migrated(rt.engine, rt.settings, rt.tables.values()), READY_TIMEOUT_SECONDS
        )
    except Exception as exc:  # the database may come up later; /readyz tells
        logger.warning("start-up: database check failed: %s", type(exc).__name__)
        return
    if not migrated:
        logger.warning("start-up: %s", NOT_MIGRATED)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def replica_check(rt: Runtime) -> str:
    assert rt.reads is not None
    try:
        await asyncio.wait_for(ping(rt.reads.replica), READY_TIMEOUT_SECONDS)
    except Exception as exc:
        logger.warning("readiness: replica check failed: %s", type(exc).__name__)
        return "degraded: reads go to the primary"
    return "ok"


async def readyz(request: Request) -> Response:
    rt = get_runtime(request)
    if rt.shutdown.begun:  # the load balancer should stop sending here now
        return json_response(
            {"status": "shutting down", "checks": {}},
            503,
            {"Cache-Control": "no-store", "Retry-After": "5", "Connection": "close"},
        )
    checks: dict[str, str] = {}
    ready = True
    try:
        migrated = await asyncio.wait_for(
            is_migrated(rt.reader, rt.settings, rt.tables.values()), READY_TIMEOUT_SECONDS
        )
        checks["database"] = "ok" if migrated else NOT_MIGRATED
        ready = migrated
    except Exception as exc:  # any failure means "not ready", never a 500
        logger.warning("readiness: database check failed: %s", type(exc).__name__)
        checks["database"] = "unreachable"
        ready = False
    if rt.reads is not None:  # a replica down is not "not ready": reads go to the primary
        checks["replica"] = await replica_check(rt)
    if rt.settings.redis_url:
        healthy = await rt.cache.ping()
        checks["redis"] = "ok" if healthy else "degraded: serving from process memory"
    else:
        checks["redis"] = "not configured: process memory"
    status = 200 if ready else 503
    headers = {"Cache-Control": "no-store"}
    if not ready:
        headers["Retry-After"] = "5"
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "id_cache": rt.ids.counts(),
    }
    return json_response(body, status, headers)
