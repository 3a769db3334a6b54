"""Shared pieces of the OpenAPI document: problem responses, security schemes, headers.

Also the small builders every operation uses (`_ref`, `_json`, `_operation`, ...) and the
per-type components: the JSON Schema shapes of `registry.jsonschema` copied in with their
refs rewritten, plus each type's search filter, search body and list envelope.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine import errors
from registry.descriptors import PUBLIC_ID_PATTERN, ObjectType, Registry
from registry.jsonschema import NO_NUL_PATTERN, map_refs, type_schema
from registry.searchschema import filter_schema, search_schema

Schema = dict[str, Any]
CRUD = "/v3/crud"
FILTER_REF = "#/components/schemas/{type}.filter"
READ_ERRORS = (400, 401, 403, 404, 422, 429, 503)
WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)

#: Shared problem responses: status -> (component name, error class, response headers).
ERRORS: dict[int, tuple[str, type[errors.AetherError], tuple[str, ...]]] = {
    400: ("BadRequest", errors.BadRequestError, ()),
    401: ("Unauthorized", errors.UnauthorizedError, ("WWW-Authenticate",)),
    403: ("Forbidden", errors.ForbiddenError, ()),
    404: ("NotFound", errors.NotFoundError, ()),
    405: ("MethodNotAllowed", errors.MethodNotAllowedError, ("Allow",)),
    409: ("Conflict", errors.ConflictError, ()),
    412: ("PreconditionFailed", errors.PreconditionFailedError, ()),
    413: ("PayloadTooLarge", errors.PayloadTooLargeError, ()),
    415: ("UnsupportedMediaType", errors.UnsupportedMediaTypeError, ()),
    416: ("RangeNotSatisfiable", errors.RangeNotSatisfiableError, ("Content-Range",)),
    422: ("ValidationFailed", errors.ValidationError, ()),
    428: ("PreconditionRequired", errors.PreconditionRequiredError, ()),
    429: ("TooManyRequests", errors.RateLimitedError, ("Retry-After",)),
    503: ("ServiceUnavailable", errors.ServiceUnavailableError, ("Retry-After",)),
    507: ("InsufficientStorage", errors.InsufficientStorageError, ()),
}

HEADERS: Schema = {
    "ETag": {"description": "The object's version tag.", "schema": {"type": "string"}},
    "Location": {"description": "URL of the new object.", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "Accepted schemes.", "schema": {"type": "string"}},
    "Allow": {"description": "Methods the resource offers.", "schema": {"type": "string"}},
    "Content-Range": {
        "description": "`bytes */<size>`: the size the range missed.",
        "schema": {"type": "string"},
    },
}

SECURITY_SCHEMES: Schema = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "`Authorization: Bearer <JWT>` with claims sub, acct, role, exp.",
    },
    "apiKeyAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key `ae_<prefix>_<secret>`.",
    },
    # The same key may travel as `Authorization: ApiKey <key>`; OpenAPI has no http scheme
    # for it, so it is an apiKey scheme on the Authorization header whose value is typed whole.
    "apiKeyAuthorization": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Authorization: ApiKey ae_<prefix>_<secret>` (type the whole value).",
    },
}

PROBLEM: Schema = {
    "title": "Problem (RFC 9457)",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "message"],
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

FIXED_TAGS = [
    {"name": "operations", "description": "Health and documentation."},
    {"name": "auth", "description": "Log in for a JWT."},
    {"name": "schema", "description": "Schema discovery."},
    {"name": "actions", "description": "Hand-written routes under /v3/action."},
]


# -- small builders -----------------------------------------------------------------------


def _ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(description: str, schema: Schema, headers: Sequence[str] = ()) -> Schema:
    out: Schema = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = {h: _ref(h, "headers") for h in headers}
    return out


def _body(schema: Schema, example: Any = None) -> Schema:
    media: Schema = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {"application/json": media}}


def _with_errors(responses: Schema, statuses: Sequence[int]) -> Schema:
    out = dict(responses)
    for status in statuses:
        out.setdefault(str(status), _ref(ERRORS[status][0], "responses"))
    return out


def _operation(op_id: str, summary: str, tag: str, role: str | None, **rest: Any) -> Schema:
    statuses: Sequence[int] = rest.pop("errors", READ_ERRORS)
    op: Schema = {"operationId": op_id, "summary": summary, "tags": [tag]}
    if role is not None:
        op["x-aether-min-role"] = role
    op |= rest
    op["responses"] = _with_errors(rest["responses"], statuses)
    return op


def _path_param(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": PUBLIC_ID_PATTERN},
    }


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description} | {
        "schema": schema
    }


def _header(name: str, description: str) -> Schema:
    return {"name": name, "in": "header", "required": False, "description": description} | {
        "schema": {"type": "string"}
    }


def _rewrite_refs(node: Any, type_name: str) -> Any:
    """`#/$defs/X` of a type document becomes `#/components/schemas/<type>.X`."""
    prefix = f"#/components/schemas/{type_name}."
    return map_refs(
        node,
        lambda ref: prefix + ref.removeprefix("#/$defs/") if ref.startswith("#/$defs/") else ref,
    )


# -- components ---------------------------------------------------------------------------


def _shared_schemas() -> Schema:
    token = {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer", "minimum": 1},
        },
    }
    login = {
        "type": "object",
        "required": ["account", "email", "password"],
        "additionalProperties": False,
        "properties": {
            "account": {
                "type": "string",
                "description": "The account's slug.",
                "minLength": 1,
                "maxLength": 63,
                "pattern": NO_NUL_PATTERN,
            },
            "email": {
                "type": "string",
                "format": "email",
                "minLength": 3,
                "maxLength": 320,
                "pattern": NO_NUL_PATTERN,
            },
            "password": {
                "type": "string",
                "writeOnly": True,
                "minLength": 1,
                "maxLength": 1024,
                "pattern": NO_NUL_PATTERN,
            },
        },
    }
    entry = {
        "type": "object",
        "required": ["name", "title", "parent", "children", "links"],
        "properties": {
            "name": {"type": "string"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "parent": {
                "type": ["object", "null"],
                "properties": {"type": {"type": "string"}, "field": {"type": "string"}},
            },
            "children": {"type": "array", "items": {"type": "string"}},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    index = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"type": "array", "items": entry}},
    }
    health = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {"Problem": PROBLEM, "LoginRequest": login, "Token": token, "SchemaIndex": index} | {
        "Health": health
    }


def _error_responses() -> Schema:
    out: Schema = {}
    for status, (name, cls, headers) in ERRORS.items():
        example = {
            "type": errors.PROBLEM_BASE + cls.slug,
            "title": cls.title,
            "status": status,
            "detail": cls.title,
            "instance": "/v3/crud/event",
            "request_id": "01J0000000000000000000000",
        }
        if status == 422:
            example["errors"] = [{"path": "name", "message": "Expected `str`"}]
        response: Schema = {
            "description": cls.title,
            "content": {
                "application/problem+json": {"schema": _ref("Problem"), "example": example}
            },
        }
        if headers:
            response["headers"] = {h: _ref(h, "headers") for h in headers}
        out[name] = response
    return out


def _shared_parameters(max_page: int) -> Schema:
    return {
        "limit": _query(
            "limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": max_page}
        ),
        "offset": _query(
            "offset", "Rows to skip.", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
        ),
        "after": _query("after", "The `next` cursor of the previous page.", {"type": "string"}),
        "count": _query("count", "Add `total` to the envelope.", {"type": "boolean"}),
        "IfMatch": _header("If-Match", "ETag the change is based on; stale answers 412."),
        "IfNoneMatch": _header("If-None-Match", "A matching ETag answers 304."),
        "IdempotencyKey": _header("Idempotency-Key", "A retry with the same key replays."),
    }


def _read_component(obj: ObjectType, read: Schema) -> Schema:
    """The object as a response carries it: `fields=` may leave out anything but `id`, and
    `include=` adds relations under their names."""
    schema = {k: v for k, v in read.items() if k not in ("$schema", "$id", "$defs", "x-aether")}
    schema["required"] = ["id"]
    props = dict(schema["properties"])
    for rel in (obj.parent, *obj.references):
        if rel is None:
            continue
        field = obj.field(rel.field)
        target = _ref(rel.target)
        if field is None or field.nullable:
            target = {"anyOf": [target, {"type": "null"}]}
        props.setdefault(rel.name, target | {"description": f"With include={rel.name}."})
    for child in obj.children:
        props.setdefault(
            child.name,
            {
                "type": "array",
                "items": _ref(child.target),
                "description": f"With include={child.name}.",
            },
        )
    schema["properties"] = props
    return schema


def _type_components(obj: ObjectType, registry: Registry, max_page: int) -> Schema:
    doc = type_schema(obj, registry)
    defs = doc.pop("$defs")
    name = obj.name
    out: Schema = {name: _rewrite_refs(_read_component(obj, doc), name)}
    for key, sub in defs.items():
        out[f"{name}.{key}"] = _rewrite_refs(sub, name)
    create = out[f"{name}.create"]
    if obj.parent is not None and obj.parent.field in create.get("required", ()):
        # On a nested POST the URL names the parent, so its field is no longer required.
        out[f"{name}.create_nested"] = create | {
            "title": f"{obj.title} (create, nested)",
            "required": [n for n in create["required"] if n != obj.parent.field],
        }
    out[f"{name}.filter"] = filter_schema(obj, FILTER_REF)
    out[f"{name}.search"] = search_schema(obj, max_page, FILTER_REF, registry)
    out[f"{name}.list"] = {
        "title": f"{obj.title} list",
        "type": "object",
        "required": ["data", "next"],
        "properties": {
            "data": {"type": "array", "items": _ref(name)},
            "next": {"type": ["string", "null"], "description": "Cursor of the next page."},
            "total": {"type": "integer", "minimum": 0, "description": "With count=true."},
        },
        "additionalProperties": False,
    }
    return out
