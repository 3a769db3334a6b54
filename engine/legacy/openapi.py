"""The legacy routes in the OpenAPI document, derived from the V3 operations they adapt.

`with_legacy_paths(document, registry)` copies each type's flat V3 collection, item and
(for `/v2/crud`) search operations under the legacy prefixes, marked `deprecated: true`,
with the legacy answer shapes (`{"data": ...}`, `has_more`), PUT beside PATCH, the
Deprecation, Sunset and Link headers on every response, and `x-aether-successor` naming
the V3 operation. It adds the usage endpoint too. Called only while the routes are served.
"""

from __future__ import annotations

import copy
from typing import Any

from engine.legacy.calls import LEGACY_PREFIXES, V3_PREFIX, successor_method
from engine.legacy.routes import USAGE_SPEC
from engine.openapi.paths import _action_operation
from registry.descriptors import Registry

Schema = dict[str, Any]
TAG = {
    "name": "legacy",
    "description": "Deprecated `/crud` and `/v2/crud` routes, served while AE_LEGACY_ROUTES"
    " is on; each operation names its V3 successor.",
}
HEADERS: Schema = {
    "Deprecation": {
        "description": "When the route was deprecated (RFC 9745), e.g. `@1767225600`.",
        "schema": {"type": "string"},
    },
    "Sunset": {
        "description": "When the route goes away (RFC 8594; AE_LEGACY_SUNSET).",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'The V3 URL of the same resource: `<...>; rel="successor-version"`.',
        "schema": {"type": "string"},
    },
}
_HEADER_REFS = {name: {"$ref": f"#/components/headers/{name}"} for name in HEADERS}
_RESPONSES = "#/components/responses/"
_METHODS = ("get", "post", "patch", "delete")


def with_legacy_paths(document: Schema, registry: Registry) -> Schema:
    """`document` (a V3 OpenAPI document) with the legacy operations and the usage route."""
    doc = copy.deepcopy(document)
    doc["components"]["headers"] |= HEADERS
    responses = doc["components"]["responses"]
    for name in list(responses):
        responses[f"Legacy{name}"] = _with_headers(responses[name])
    paths = doc["paths"]
    for obj in registry:
        base = f"{V3_PREFIX}/{obj.name}"
        shapes = {"": "collection", "/{id}": "item", "/search": "search"}
        for prefix, label in LEGACY_PREFIXES.items():
            for tail, kind in shapes.items():
                v3_item = document["paths"].get(base + tail)
                if v3_item is None or (kind == "search" and label == "v1"):
                    continue
                item: Schema = {}
                if "parameters" in v3_item:
                    item["parameters"] = copy.deepcopy(v3_item["parameters"])
                for method in _METHODS:
                    if method in v3_item:
                        item[method] = _legacy_operation(
                            v3_item[method], label, method, base + tail, obj.name, kind
                        )
                if "patch" in item:
                    put = _legacy_operation(
                        v3_item["patch"], label, "put", base + tail, obj.name, kind
                    )
                    put["summary"] += " (PUT: a partial update, as PATCH)"
                    item["put"] = put
                paths[prefix + f"/{obj.name}" + tail] = item
    paths[USAGE_SPEC.path] = {"get": _action_operation(USAGE_SPEC)}
    doc["tags"] = [*doc["tags"], TAG]
    return doc


def _with_headers(response: Schema) -> Schema:
    out = copy.deepcopy(response)
    out["headers"] = {**out.get("headers", {}), **_HEADER_REFS}
    return out


def _legacy_operation(
    v3: Schema, label: str, method: str, v3_path: str, name: str, kind: str
) -> Schema:
    op = copy.deepcopy(v3)
    successor = f"{successor_method(method.upper())} {v3_path}"
    op["operationId"] = f"legacy.{label}.{v3['operationId']}" + (".put" if method == "put" else "")
    op["summary"] = f"{v3['summary']} (deprecated: use {successor})"
    op["tags"] = ["legacy"]
    op["deprecated"] = True
    op["x-aether-successor"] = successor
    responses: Schema = {}
    for status, response in v3["responses"].items():
        if "$ref" in response:
            responses[status] = {"$ref": _RESPONSES + "Legacy" + response["$ref"].split("/")[-1]}
            continue
        legacy = _with_headers(response)
        media = legacy.get("content", {}).get("application/json")
        if media is not None and status in ("200", "201"):
            single = kind == "item" or (kind == "collection" and method == "post")
            media["schema"] = _single(name) if single else _page(name)
        responses[status] = legacy
    op["responses"] = responses
    return op


def _single(name: str) -> Schema:
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"$ref": f"#/components/schemas/{name}"}},
        "additionalProperties": False,
    }


def _page(name: str) -> Schema:
    return {
        "type": "object",
        "required": ["data", "has_more"],
        "properties": {
            "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
            "has_more": {"type": "boolean", "description": "Whether a later offset finds more."},
            "total": {"type": "integer", "minimum": 0, "description": "With count=true."},
        },
        "additionalProperties": False,
    }
