"""The realtime routes in the OpenAPI document: SSE as `text/event-stream`, and the
WebSocket's messages as schemas (OpenAPI has no WebSocket operations: the upgrade is
described as a GET answering 101, its messages under `components.schemas`)."""

from __future__ import annotations

from typing import Any

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_ID = {"type": "string", "minLength": 1}
_SEQ = {"type": "string", "description": "Opaque, increasing within an account"}
_FILTER = {
    "type": "object",
    "description": "The search grammar (SPEC 6) on the object's own fields; no relations",
}

MESSAGE_SCHEMAS: dict[str, Any] = {
    "RealtimeAuth": {
        "type": "object",
        "required": ["type", "token"],
        "properties": {"type": {"const": "auth"}, "token": {"type": "string"}},
        "additionalProperties": False,
        "description": "Client, first message when no credentials came with the upgrade",
    },
    "RealtimeSubscribe": {
        "type": "object",
        "required": ["type", "id", "object"],
        "properties": {
            "type": {"const": "subscribe"},
            "id": _ID,
            "object": {"type": "string", "description": "An object type name"},
            "filter": _FILTER,
            "since": _SEQ,
        },
        "additionalProperties": False,
    },
    "RealtimeUnsubscribe": {
        "type": "object",
        "required": ["type", "id"],
        "properties": {"type": {"const": "unsubscribe"}, "id": _ID},
        "additionalProperties": False,
    },
    "RealtimeChange": {
        "type": "object",
        "required": ["type", "subscription", "op", "object", "id", "data", "version", "seq"],
        "properties": {
            "type": {"const": "change"},
            "subscription": {"type": ["string", "null"], "description": "null over SSE"},
            "op": {"enum": ["create", "update", "delete"]},
            "object": {"type": "string"},
            "id": {"type": "string"},
            "data": {
                "type": ["object", "null"],
                "description": "The object as a GET returns it; null for a delete",
            },
            "version": {"type": "integer"},
            "seq": _SEQ,
        },
    },
    "RealtimeSubscribed": {
        "type": "object",
        "required": ["type", "id"],
        "properties": {"type": {"const": "subscribed"}, "id": _ID},
    },
    "RealtimeError": {
        "type": "object",
        "required": ["type", "subscription", "problem"],
        "properties": {
            "type": {"const": "error"},
            "subscription": {"type": ["string", "null"]},
            "problem": _PROBLEM,
        },
    },
    "RealtimePing": {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"const": "ping"}},
    },
}


def _refs(*names: str) -> dict[str, Any]:
    return {"oneOf": [{"$ref": f"#/components/schemas/{n}"} for n in names]}


def realtime_paths() -> dict[str, Any]:
    problem = {"application/problem+json": {"schema": _PROBLEM}}
    return {
        "/v3/realtime": {
            "get": {
                "operationId": "realtime.websocket",
                "tags": ["realtime"],
                "summary": "Live changes over a WebSocket",
                "description": (
                    "Upgrade to a WebSocket. Credentials as for HTTP, or a first `auth` "
                    "message within 5 s. Client messages: `RealtimeAuth`, "
                    "`RealtimeSubscribe`, `RealtimeUnsubscribe`; server messages: "
                    "`RealtimeSubscribed`, `RealtimeChange`, `RealtimeError`, `RealtimePing` "
                    "(every 20 s). Close codes: 4401 (credentials missing, failed or "
                    "expired), 1008 (more than 1,000 messages behind)."
                ),
                "responses": {
                    "101": {
                        "description": "Switching protocols; then JSON text messages",
                        "content": {
                            "application/json": {
                                "schema": _refs(
                                    "RealtimeSubscribed",
                                    "RealtimeChange",
                                    "RealtimeError",
                                    "RealtimePing",
                                )
                            }
                        },
                    }
                },
            }
        },
        "/v3/realtime/sse": {
            "get": {
                "operationId": "realtime.sse",
                "tags": ["realtime"],
                "summary": "Live changes as Server-Sent Events",
                "description": (
                    "Each change is an event with `id: <seq>` and `data: <RealtimeChange>`; "
                    "`Last-Event-ID` (or `since`) resumes after that seq. `access_token` "
                    "carries credentials for browsers' EventSource, which cannot send "
                    "headers. A gap ends the stream after an `error` message."
                ),
                "parameters": [
                    {
                        "name": "object",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "filter",
                        "in": "query",
                        "description": "URL-encoded JSON filter",
                        "schema": {"type": "string"},
                    },
                    {"name": "since", "in": "query", "schema": _SEQ},
                    {"name": "access_token", "in": "query", "schema": {"type": "string"}},
                    {"name": "Last-Event-ID", "in": "header", "schema": _SEQ},
                ],
                "responses": {
                    "200": {
                        "description": "The event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "401": {"description": "No or bad credentials", "content": problem},
                    "403": {"description": "Role too low", "content": problem},
                    "410": {"description": "Resume point no longer kept", "content": problem},
                    "422": {"description": "Bad object, filter or seq", "content": problem},
                },
            }
        },
    }


def add_realtime(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with the realtime paths, message schemas and tag."""
    document["paths"].update(realtime_paths())
    document["components"]["schemas"].update(MESSAGE_SCHEMAS)
    document["tags"].append({"name": "realtime", "description": "Live changes (SPEC 6.5)"})
    return document
