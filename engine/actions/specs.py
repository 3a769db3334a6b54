"""OpenAPI descriptions of the built-in actions (each action points at its spec here)."""

from __future__ import annotations

from typing import Any

from engine.openapi import WRITE_ERRORS, OperationSpec
from registry.descriptors import TENANT_ROLES
from registry.jsonschema import NO_NUL_PATTERN

_BINARY = {"type": "string", "format": "binary"}
_BLOB_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": '`"<sha256>"`'},
    "Cache-Control": {"schema": {"type": "string"}},
    "Accept-Ranges": {"schema": {"type": "string"}},
    "Content-Range": {"schema": {"type": "string"}, "description": "on 206"},
}


def _content(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers or _BLOB_HEADERS,
        "content": {"application/octet-stream": {"schema": _BINARY}},
    }


_OBJECT = {"type": "object", "additionalProperties": True}
_BLOB_RESPONSES = {
    "200": _content("The content"),
    "206": _content("A byte range of the content"),
    "304": {"description": "Not modified (If-None-Match matched)"},
}

UPLOAD = OperationSpec(
    method="POST",
    path="/v3/action/event/{event_id}/upload",
    summary="Upload files to an event",
    description=(
        "Multipart: one or more `file` parts and an optional `meta` field (JSON text: an "
        "object with role, title and position applied to every file, or a list in file order). "
        "All or nothing: on any failure no row and no new blob is kept."
    ),
    min_role="editor",
    request_content_type="multipart/form-data",
    request_schema={
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "array", "items": _BINARY},
            "meta": {"type": "string", "description": "JSON text"},
        },
    },
    responses={
        "201": {
            "description": "The stored files and their event_file rows",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["files", "event_files"],
                        "properties": {
                            "files": {"type": "array", "items": _OBJECT},
                            "event_files": {"type": "array", "items": _OBJECT},
                        },
                    }
                }
            },
        }
    },
    errors=(*WRITE_ERRORS, 507),
    idempotent=True,
)

BLOB = OperationSpec(
    method="GET",
    path="/v3/action/blob/{sha256}",
    summary="Content of a file of the account, by SHA-256",
    parameters=(
        {
            "name": "sha256",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        },
    ),
    responses=_BLOB_RESPONSES,
    errors=(401, 403, 404, 416, 429, 503),
)

DOWNLOAD = OperationSpec(
    method="GET",
    path="/v3/action/download/{id}",
    summary="Download the file of a file, event_file or event id",
    description="An event answers its event_file with the lowest position, or with `?role=`.",
    parameters=(
        {
            "name": "role",
            "in": "query",
            "required": False,
            "schema": {
                "type": "string",
                "enum": ["attachment", "logo", "banner", "slides", "photo"],
            },
        },
    ),
    responses=_BLOB_RESPONSES,
    errors=(401, 403, 404, 416, 422, 429, 503),
)

API_KEY = OperationSpec(
    method="POST",
    path="/v3/action/api_key",
    summary="Make an API key for the account (the key is shown once)",
    min_role="admin",
    request_schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 100,
                "pattern": NO_NUL_PATTERN,
            },
            "role": {"type": "string", "enum": list(TENANT_ROLES)},
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    responses={
        "201": {
            "description": "The api_key object with its `key`",
            "content": {"application/json": {"schema": _OBJECT}},
        }
    },
    errors=(400, 401, 403, 413, 415, 422, 429, 503),
)
