"""The paths of the OpenAPI document: fixed routes, CRUD path items and action operations.

Per object type, the flat and every nested collection, search and item path with their
operations and a sample create body. Action plugins describe their routes with
`OperationSpec`, which `_action_operation` turns into an Operation Object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from engine.openapi.components import (
    CRUD,
    READ_ERRORS,
    WRITE_ERRORS,
    Schema,
    _body,
    _json,
    _operation,
    _path_param,
    _query,
    _ref,
)
from registry.descriptors import PUBLIC_ID_PATTERN, ObjectType, Registry
from registry.searchschema import include_paths


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
        if prop.get("pattern") == PUBLIC_ID_PATTERN:
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
                errors=(400, 401, 413, 415, 422, 429, 503),
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


def _names_pattern(names: list[str], prefix: str = "") -> str:
    """A comma-separated list of `names` (each after an optional `prefix`), or nothing."""
    if not names:
        return "^$"
    one = prefix + "(" + "|".join(n.replace(".", "\\.") for n in names) + ")"
    return f"^({one}(,{one})*)?$"


def _shape_parameters(obj: ObjectType, registry: Registry) -> list[Schema]:
    """`fields` and `include`, as the list and the item GET read them; their patterns list
    this type's names, as the search body's enums do."""
    readable = [f.name for f in obj.fields if f.is_readable]
    names = {
        "fields": ("Comma-separated fields; `id` always.", _names_pattern(readable)),
        "include": (
            "Relations to embed, dotted for depth.",
            _names_pattern(include_paths(obj, registry)),
        ),
    }
    return [
        _query(key, text, {"type": "string", "pattern": pattern})
        for key, (text, pattern) in names.items()
    ]


def _list_parameters(obj: ObjectType, registry: Registry) -> list[Schema]:
    """The list query: shared paging parameters, `sort`, `fields`, `include` and `filter`."""
    name = obj.name
    shared = ("limit", "offset", "after", "count")
    sortable = [f.name for f in obj.fields if f.is_readable and f.sortable]
    sort = _query(
        "sort",
        "Comma-separated keys, `-` for descending.",
        {"type": "string", "pattern": _names_pattern(sortable, "-?")},
    )
    listed = [sort, *_shape_parameters(obj, registry)]
    filter_param = {
        "name": "filter",
        "in": "query",
        "required": False,
        "description": "A filter in the search grammar, as URL-encoded JSON.",
        "content": {"application/json": {"schema": _ref(f"{name}.filter")}},
    }
    return [*(_ref(p, "parameters") for p in shared), *listed, filter_param]


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
            parameters=_list_parameters(obj, registry),
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
            errors=(400, 401, 403, 404, 422, 429, 503),
            parameters=[_ref("IfNoneMatch", "parameters"), *_shape_parameters(obj, registry)],
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
