"""The whole OpenAPI 3.1 document, and the route that serves it.

`build_openapi` is pure: it joins the shared components, each object type's components and
paths, and the action operations, refusing clashes. `openapi_routes` serves the document,
encoded once at start-up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.openapi.components import (
    FIXED_TAGS,
    HEADERS,
    SECURITY_SCHEMES,
    Schema,
    _error_responses,
    _shared_parameters,
    _shared_schemas,
    _type_components,
)
from engine.openapi.paths import OperationSpec, _action_operation, _fixed_paths, _type_paths
from registry.descriptors import Registry


def _version() -> str:
    try:
        return metadata.version("aether")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def build_openapi(
    registry: Registry,
    *,
    actions: Sequence[OperationSpec] = (),
    title: str = "Aether",
    version: str | None = None,
    max_page_size: int = 500,
) -> Schema:
    """The OpenAPI 3.1 document of every CRUD, schema, auth, health and action route.

    Raises `ValueError` when two operations share an operationId or a method and path, so
    a clashing action fails at start-up.
    """
    schemas = _shared_schemas()
    for obj in registry:
        schemas |= _type_components(obj, registry, max_page_size)
    paths = _fixed_paths()
    for obj in registry:
        paths |= _type_paths(obj, registry, schemas)
    for spec in actions:
        item = paths.setdefault(spec.path, {})
        if spec.method.lower() in item:
            raise ValueError(f"two operations for {spec.method.upper()} {spec.path}")
        item[spec.method.lower()] = _action_operation(spec)
    seen: set[str] = set()
    for item in paths.values():
        for key, op in item.items():
            if key == "parameters":
                continue
            if op["operationId"] in seen:
                raise ValueError(f"duplicate operationId {op['operationId']!r}")
            seen.add(op["operationId"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version or _version(),
            "description": "Schema-driven multi-tenant CRUD, search and actions.",
        },
        "servers": [{"url": "/"}],
        "tags": [*FIXED_TAGS, *({"name": o.name, "description": o.title} for o in registry)],
        "security": [{"bearerAuth": []}, {"apiKeyAuth": []}, {"apiKeyAuthorization": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _error_responses(),
            "parameters": _shared_parameters(max_page_size),
            "headers": HEADERS,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def openapi_routes(document: Mapping[str, Any], *, path: str = "/openapi.json") -> list[BaseRoute]:
    """A route serving `document`, encoded once now (at start-up), with an ETag."""
    body = msgspec.json.encode(document)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}

    async def endpoint(request: Request) -> Response:
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    return [Route(path, endpoint, methods=["GET"], name="openapi")]
