"""The OpenAPI 3.1 document of every route, generated from the registry (SPEC 5, 6, 7).

`build_openapi` is pure: per object type it copies the JSON Schema shapes of
`registry.jsonschema` into components (refs rewritten), adds the recursive search filter,
and writes the flat and nested CRUD paths. Action plugins describe their routes with
`OperationSpec`. `openapi_routes` serves the document, encoded once at start-up.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine import errors
from registry.descriptors import ObjectType, Registry
from registry.jsonschema import ID_PATTERN, filter_schema, search_schema, type_schema

__all__ = ["OperationSpec", "build_openapi", "openapi_routes"]

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
    422: ("ValidationFailed", errors.ValidationError, ()),
    428: ("PreconditionRequired", errors.PreconditionRequiredError, ()),
    429: ("TooManyRequests", errors.RateLimitedError, ("Retry-After",)),
    503: ("ServiceUnavailable", errors.ServiceUnavailableError, ("Retry-After",)),
}

HEADERS: Schema = {
    "ETag": {"description": "The object's version tag.", "schema": {"type": "string"}},
    "Location": {"description": "URL of the new object.", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "Accepted schemes.", "schema": {"type": "string"}},
    "Allow": {"description": "Methods the resource offers.", "schema": {"type": "string"}},
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


class OperationSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How an action plugin describes its route for the OpenAPI document.

    `path` is the full template (`/v3/action/event/{event_id}/upload`); its `{params}` are
    declared as strings unless `parameters` declares them. `request_schema` is the body's
    JSON Schema under `request_content_type` (for `multipart/form-data` it lists the form
    parts). `responses` are OpenAPI Response Objects by status code; `errors` adds the
    shared problem responses; `public` routes need no credentials; `idempotent` documents
    the `Idempotency-Key` header.
    """

    method: str
    path: str
    summary: str
    description: str = ""
    operation_id: str | None = None
    min_role: str = "viewer"
    request_schema: Mapping[str, Any] | None = None
    request_content_type: str = "application/json"
    responses: Mapping[str, Mapping[str, Any]] = msgspec.field(default_factory=dict)
    errors: tuple[int, ...] = READ_ERRORS
    parameters: tuple[Mapping[str, Any], ...] = ()
    idempotent: bool = False
    public: bool = False
    tags: tuple[str, ...] = ("actions",)


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
        "schema": {"type": "string", "pattern": ID_PATTERN},
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
    if isinstance(node, list):
        return [_rewrite_refs(v, type_name) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rewrite_refs(v, type_name) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        out["$ref"] = f"#/components/schemas/{type_name}." + ref.removeprefix("#/$defs/")
    return out


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
            "account": {"type": "string", "description": "The account's slug."},
            "email": {"type": "string", "format": "email", "maxLength": 320},
            "password": {"type": "string", "writeOnly": True},
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
        "offset": _query("offset", "Rows to skip.", {"type": "integer", "minimum": 0}),
        "after": _query("after", "The `next` cursor of the previous page.", {"type": "string"}),
        "sort": _query("sort", "Comma-separated keys, `-` for descending.", {"type": "string"}),
        "fields": _query("fields", "Comma-separated fields; `id` always.", {"type": "string"}),
        "include": _query("include", "Relations to embed, dotted for depth.", {"type": "string"}),
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
    out[f"{name}.search"] = search_schema(obj, max_page, FILTER_REF)
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


_SAMPLE_ID = "Xq3vZ8kLm2Np4Rt6Yw9BcA"


def _sample(prop: Schema) -> Any:
    """A value that satisfies `prop`, or `...` when none can be made up safely."""
    if "examples" in prop:
        return prop["examples"][0]
    if "default" in prop:
        return prop["default"]
    kind = prop.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if "enum" in prop:
        return prop["enum"][0]
    if kind == "string":
        if prop.get("pattern") == ID_PATTERN:
            return _SAMPLE_ID
        fmt = prop.get("format") or prop.get("x-format")
        fixed = {
            "date-time": "2026-06-01T09:00:00Z",
            "date": "2026-06-01",
            "email": "ada@example.com",
            "iana-timezone": "Europe/Berlin",
        }
        if fmt in fixed:
            return fixed[fmt]
        if "pattern" in prop:
            return ...
        text = "Example " + str(prop.get("title", "text")).lower()
        text = text.ljust(int(prop.get("minLength", 0)), "x")
        return text[: int(prop.get("maxLength", len(text)))]
    if kind in ("integer", "number"):
        low = prop.get("minimum", prop.get("exclusiveMinimum", 0) + 1)
        return low if kind == "number" else int(low)
    return {"boolean": True, "object": {}, "array": []}.get(str(kind), ...)


def _example(create: Schema) -> Schema | None:
    """A create body built from the fields' examples, defaults and constraints."""
    body: Schema = {}
    required = set(create.get("required", ()))
    for name, prop in create.get("properties", {}).items():
        if name in required or "examples" in prop:
            value = _sample(prop)
            if value is ...:
                return None
            body[name] = value
    return body


# -- paths ----------------------------------------------------------------------------------


def _fixed_paths() -> Schema:
    public: Schema = {"security": []}
    ops = "operations"
    html = {"description": "HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}
    any_json = {"type": "object"}
    return {
        "/healthz": {
            "get": _operation(
                "healthz",
                "Liveness",
                ops,
                None,
                **public,
                errors=(),
                responses={"200": _json("The process is up.", _ref("Health"))},
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "Readiness",
                ops,
                None,
                **public,
                errors=(503,),
                responses={"200": _json("Database reachable.", _ref("Health"))},
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                ops,
                None,
                **public,
                errors=(),
                responses={"200": _json("OpenAPI 3.1 document.", any_json)},
            )
        },
        "/docs": {
            "get": _operation(
                "docs", "Swagger UI", ops, None, **public, errors=(), responses={"200": html}
            )
        },
        "/v3/auth/login": {
            "post": _operation(
                "auth.login",
                "Log in with account slug, email and password",
                "auth",
                None,
                **public,
                errors=(400, 401, 415, 422, 429, 503),
                requestBody=_body(_ref("LoginRequest")),
                responses={"200": _json("A bearer token.", _ref("Token"))},
            )
        },
        f"{CRUD}/schema": {
            "get": _operation(
                "schema.index",
                "Index of object types",
                "schema",
                "viewer",
                errors=(401, 429, 503),
                responses={"200": _json("Every type.", _ref("SchemaIndex"))},
            )
        },
    }


def _chains(registry: Registry, name: str) -> list[list[ObjectType]]:
    """The flat route (no ancestors), then every suffix of the ancestor chain, root first."""
    root_first = list(reversed(registry.ancestors(name)))
    return [[], *(root_first[-k:] for k in range(1, len(root_first) + 1))]


def _list_parameters(name: str) -> list[Schema]:
    shared = ("limit", "offset", "after", "sort", "fields", "include", "count")
    filter_param = {
        "name": "filter",
        "in": "query",
        "required": False,
        "description": "A filter in the search grammar, as URL-encoded JSON.",
        "content": {"application/json": {"schema": _ref(f"{name}.filter")}},
    }
    return [*(_ref(p, "parameters") for p in shared), filter_param]


def _type_paths(obj: ObjectType, registry: Registry, schemas: Schema) -> Schema:
    paths: Schema = {}
    name, perms = obj.name, obj.permissions
    read, write = perms.read_role, perms.write_role
    if_match = [_ref("IfMatch", "parameters")]
    for chain in _chains(registry, name):
        collection = CRUD + "".join(f"/{a.name}/{{{a.name}_id}}" for a in chain) + f"/{name}"
        stem = ".".join([*(a.name for a in chain), name])
        where = f" under {'/'.join(a.name for a in chain)}" if chain else ""
        params = [_path_param(f"{a.name}_id", f"Public id of the {a.name}.") for a in chain]
        item_params = [*params, _path_param("id", f"Public id of the {name}.")]

        def op(verb: str, summary: str, role: str, **rest: Any) -> Schema:
            return _operation(f"{stem}.{verb}", summary + where, name, role, **rest)  # noqa: B023

        coll: Schema = {"parameters": params} if params else {}
        coll["get"] = op(
            "list",
            f"List {name}",
            read,
            parameters=_list_parameters(name),
            responses={"200": _json("A page of objects.", _ref(f"{name}.list"))},
        )
        if perms.create:
            shape = (
                f"{name}.create_nested"
                if chain and f"{name}.create_nested" in schemas
                else f"{name}.create"
            )
            coll["post"] = op(
                "create",
                f"Create {name}",
                write,
                errors=WRITE_ERRORS,
                requestBody=_body(_ref(shape), _example(schemas[shape])),
                responses={"201": _json("Created.", _ref(name), ("Location", "ETag"))},
            )
        paths[collection] = coll
        search = op(
            "search",
            f"Search {name}",
            read,
            errors=(400, 401, 403, 404, 413, 415, 422, 429, 503),
            requestBody=_body(_ref(f"{name}.search"), {"filter": {}, "limit": 50}),
            responses={"200": _json("A page of matches.", _ref(f"{name}.list"))},
        )
        paths[f"{collection}/search"] = ({"parameters": params} if params else {}) | {
            "post": search
        }
        item: Schema = {"parameters": item_params}
        not_modified = {
            "description": "Not modified.",
            "headers": {"ETag": _ref("ETag", "headers")},
        }
        item["get"] = op(
            "get",
            f"Read a {name}",
            read,
            errors=(400, 401, 403, 404, 429, 503),
            parameters=[_ref("IfNoneMatch", "parameters")],
            responses={"200": _json("The object.", _ref(name), ("ETag",)), "304": not_modified},
        )
        if perms.update:
            item["patch"] = op(
                "update",
                f"Update a {name}",
                write,
                parameters=if_match,
                errors=(*WRITE_ERRORS, 412, 428),
                requestBody=_body(_ref(f"{name}.update")),
                responses={"200": _json("The updated object.", _ref(name), ("ETag",))},
            )
        if perms.delete:
            item["delete"] = op(
                "delete",
                f"Delete a {name}",
                write,
                parameters=if_match,
                errors=(400, 401, 403, 404, 409, 412, 428, 429, 503),
                responses={"204": {"description": "Deleted."}},
            )
        paths[f"{collection}/{{id}}"] = item
    paths[f"{CRUD}/{name}/schema"] = {
        "get": _operation(
            f"{name}.schema",
            f"JSON Schema of {name}",
            name,
            read,
            errors=(401, 403, 429, 503),
            responses={"200": _json("A JSON Schema (draft 2020-12) document.", {"type": "object"})},
        )
    }
    return paths


def _action_operation(spec: OperationSpec) -> Schema:
    declared = {p.get("name") for p in spec.parameters if p.get("in") == "path"}
    params = [dict(p) for p in spec.parameters]
    for name in re.findall(r"{([^}/]+)}", spec.path):
        if name not in declared:
            params.append(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            )
    if spec.idempotent:
        params.append(_ref("IdempotencyKey", "parameters"))
    slug = re.sub(r"[^A-Za-z0-9]+", "_", spec.path.removeprefix("/v3/action/")).strip("_")
    rest: Schema = {}
    if spec.description:
        rest["description"] = spec.description
    if params:
        rest["parameters"] = params
    if spec.public:
        rest["security"] = []
    if spec.request_schema is not None:
        media = {spec.request_content_type: {"schema": dict(spec.request_schema)}}
        rest["requestBody"] = {"required": True, "content": media}
    responses = {k: dict(v) for k, v in spec.responses.items()} or {"200": {"description": "OK"}}
    op_id = spec.operation_id or f"action.{slug}.{spec.method.lower()}"
    tag = spec.tags[0] if spec.tags else "actions"
    op = _operation(
        op_id, spec.summary, tag, spec.min_role, errors=spec.errors, **rest, responses=responses
    )
    op["tags"] = list(spec.tags) or [tag]
    return op


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
