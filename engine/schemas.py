"""Schema discovery responses and the OpenAPI/docs routes, generated once and cached.

Documents are built from the registry at start-up (first use), encoded once, and served
with a strong ETag so UI generators can cache them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.responses import PRIVATE_HEADERS, matches_etag
from engine.runtime import Runtime, get_runtime
from registry.descriptors import ObjectType
from registry.jsonschema import schema_index, type_schema

_ENCODER = msgspec.json.Encoder()
SCHEMA_CACHE_CONTROL = "private, max-age=300, must-revalidate"


class EncodedDocument(msgspec.Struct, frozen=True):
    body: bytes
    etag: str


def encode_document(document: Any) -> EncodedDocument:
    body = _ENCODER.encode(document)
    return EncodedDocument(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _cached(rt: Runtime, key: str, build: Any) -> EncodedDocument:
    cache: dict[str, EncodedDocument] = rt.documents
    if key not in cache:
        cache[key] = encode_document(build())
    return cache[key]


def _document_response(
    request: Request, doc: EncodedDocument, media_type: str, cache_control: str, private: bool
) -> Response:
    headers = {"ETag": doc.etag, "Cache-Control": cache_control}
    if private:
        headers["Vary"] = PRIVATE_HEADERS["Vary"]
    if matches_etag(request.headers.get("if-none-match"), doc.etag, weak=True):
        return Response(status_code=304, headers=headers)
    return Response(doc.body, media_type=media_type, headers=headers)


def schema_index_response(request: Request, rt: Runtime) -> Response:
    doc = _cached(rt, "index", lambda: schema_index(rt.registry))
    return _document_response(
        request, doc, "application/schema+json", SCHEMA_CACHE_CONTROL, private=True
    )


def type_schema_response(request: Request, rt: Runtime, obj: ObjectType) -> Response:
    doc = _cached(rt, f"type:{obj.name}", lambda: type_schema(obj, rt.registry))
    return _document_response(
        request, doc, "application/schema+json", SCHEMA_CACHE_CONTROL, private=True
    )


def openapi_document(rt: Runtime, actions: Sequence[Any]) -> dict[str, Any]:
    from engine.openapi import build_openapi

    operations = [spec for action in actions if (spec := getattr(action, "openapi", None))]
    document = build_openapi(rt.registry, actions=operations)
    if rt.settings.legacy_routes:  # deprecated routes are documented only while served
        from engine.legacy import with_legacy_paths

        document = with_legacy_paths(document, rt.registry)
    return document


def openapi_routes(rt: Runtime, actions: Sequence[Any]) -> list[BaseRoute]:
    from engine.docs import docs_routes

    async def openapi_json(request: Request) -> Response:
        runtime = get_runtime(request)
        doc = _cached(runtime, "openapi", lambda: openapi_document(runtime, actions))
        return _document_response(
            request, doc, "application/json", "public, max-age=300", private=False
        )

    return [Route("/openapi.json", openapi_json, methods=["GET", "HEAD"]), *docs_routes()]
