"""JSON Schema (draft 2020-12) documents built from object-type descriptors (SPEC 7).

Pure functions over `registry.descriptors`: the read shape of each type, its `create` and
`update` write shapes under `$defs`, the `x-aether` hints a UI needs (relations, operators,
sorting, links) and the index served at `GET /v3/crud/schema`. No SQLAlchemy here.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from registry.descriptors import PUBLIC_ID_PATTERN, FieldInfo, ObjectType, Registry
from registry.operators import operators_for
from registry.types import EMAIL_PATTERN, time_zone_names

DIALECT = "https://json-schema.org/draft/2020-12/schema"
CRUD_PREFIX = "/v3/crud"
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
#: No NUL character in text: PostgreSQL cannot store one, so no backend is offered one.
NO_NUL_PATTERN = "^[^\\x00]*$"

#: Formats defined by draft 2020-12. Anything else (`iana-timezone`) is emitted as
#: `x-format`, so strict validators that refuse unknown formats still accept the schema.
STANDARD_FORMATS = frozenset(
    {
        "date-time",
        "date",
        "time",
        "duration",
        "email",
        "idn-email",
        "hostname",
        "idn-hostname",
        "ipv4",
        "ipv6",
        "uri",
        "uri-reference",
        "iri",
        "iri-reference",
        "uuid",
        "uri-template",
        "json-pointer",
        "relative-json-pointer",
        "regex",
    }
)

Shape = Literal["read", "create", "update"]
Schema = dict[str, Any]

__all__ = [
    "DIALECT",
    "NO_NUL_PATTERN",
    "collection_paths",
    "create_schema",
    "ecma_pattern",
    "field_schema",
    "schema_index",
    "type_schema",
    "update_schema",
]


def ecma_pattern(pattern: str) -> str:
    """Rewrite a Python regular expression into the ECMA-262 dialect JSON Schema uses.

    Anchors `\\A`/`\\Z` become `^`/`$` and named groups lose their `P`; inline flags have
    no ECMA-262 spelling and raise `ValueError`.

    >>> ecma_pattern(r"\\A(?P<y>[0-9]{4})\\Z")
    '^(?<y>[0-9]{4})$'
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append({"A": "^", "Z": "$", "z": "$"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        if pattern.startswith("(?P<", i):
            out.append("(?<")
            i += 4
            continue
        if pattern.startswith("(?P=", i):
            end = pattern.find(")", i)
            out.append("\\k<" + pattern[i + 4 : end] + ">")
            i = end + 1
            continue
        if pattern.startswith("(?", i) and i + 2 < len(pattern) and pattern[i + 2] not in ":=!<":
            raise ValueError(f"pattern {pattern!r} uses an inline flag ECMA-262 cannot express")
        out.append(ch)
        i += 1
    return "".join(out)


def _humanize(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _has_ref(node: Any) -> bool:
    if isinstance(node, dict):
        return "$ref" in node or any(_has_ref(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_ref(v) for v in node)
    return False


def map_refs(node: Any, rewrite: Callable[[str], str]) -> Any:
    """A copy of the schema `node` with every `$ref` string passed through `rewrite`."""
    if isinstance(node, list):
        return [map_refs(v, rewrite) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: map_refs(v, rewrite) for k, v in node.items()}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = rewrite(out["$ref"])
    return out


def _rebase_refs(node: Any, prefix: str) -> Any:
    """Point the local refs of a fragment hoisted to `#/$defs/<prefix>` at their new home."""

    def rebase(ref: str) -> str:
        if not ref.startswith("#"):
            return ref
        pointer = ref[1:]
        if pointer.startswith("/$defs/"):
            return f"#/$defs/{prefix}." + pointer.removeprefix("/$defs/")
        return f"#/$defs/{prefix}" + pointer

    return map_refs(node, rebase)


def _embedded(field: FieldInfo, defs: Schema) -> Schema:
    """The model's own JSON Schema fragment for an object/array column.

    A fragment without `$ref` is inlined. One with refs (its own `$defs`, or recursion to
    its root) is hoisted to `#/$defs/<field>` with its refs rebased, so every document that
    holds it stays self-contained.
    """
    fragment = copy.deepcopy(dict(field.json_schema or {}))
    fragment.pop("$schema", None)
    fragment.pop("$id", None)
    if not _has_ref(fragment):
        return fragment
    inner = fragment.pop("$defs", {})
    for name, sub in inner.items():
        defs[f"{field.name}.{name}"] = _rebase_refs(sub, field.name)
    defs[field.name] = _rebase_refs(fragment, field.name)
    return {"$ref": f"#/$defs/{field.name}"}


def _value_schema(field: FieldInfo, defs: Schema) -> Schema:
    """The JSON type of `field` and the constraints that come with its kind."""
    kind = field.kind
    schema: Schema
    if kind in ("id", "reference"):
        schema = {"type": "string", "pattern": PUBLIC_ID_PATTERN}
    elif kind == "enum":
        schema = {"type": "string", "enum": list(field.enum or ())}
    elif kind in ("integer", "number", "boolean"):
        schema = {"type": kind}
    elif kind == "datetime":
        schema = {"type": "string", "format": "date-time"}
    elif kind == "date":
        schema = {"type": "string", "format": "date"}
    elif kind == "decimal":
        schema = {"type": "string", "pattern": DECIMAL_PATTERN}
    elif kind in ("object", "array"):
        schema = _embedded(field, defs) if field.json_schema else {}
        if "$ref" not in schema:
            schema.setdefault("type", kind)
            if kind == "array" and field.items and "items" not in schema:
                schema["items"] = {"type": field.items}
    else:
        schema = {"type": "string"}
    if field.format == "iana-timezone":
        schema["pattern"] = time_zone_pattern()
    if kind in ("string", "id", "reference", "enum"):
        if field.max_length is not None:
            schema["maxLength"] = field.max_length
        if field.min_length is not None:
            schema["minLength"] = field.min_length
    for pattern in _patterns(field):
        if "pattern" in schema:
            schema.setdefault("allOf", []).append({"pattern": pattern})
        else:
            schema["pattern"] = pattern
    if kind == "array" and schema.get("items") == {"type": "string"}:
        schema["items"] = {"type": "string", "pattern": NO_NUL_PATTERN}
    # A decimal travels as a string, where `minimum` would silently not apply.
    bound = "x-" if kind == "decimal" else ""
    for key, value in (
        ("minimum", field.minimum),
        ("maximum", field.maximum),
        ("exclusiveMinimum", field.exclusive_minimum),
    ):
        if value is not None:
            schema[bound + key] = value
    if field.format and field.format != schema.get("format"):
        key = "format" if field.format in STANDARD_FORMATS else "x-format"
        schema[key] = field.format
    return schema


def _patterns(field: FieldInfo) -> list[str]:
    """The patterns a written string of `field` must match, as the write path checks them:
    the model's own (or the e-mail syntax), and no NUL anywhere."""
    if field.kind != "string":
        return [ecma_pattern(field.pattern)] if field.pattern else []
    if field.pattern:
        return [ecma_pattern(field.pattern), NO_NUL_PATTERN]
    if field.format == "email":
        return [EMAIL_PATTERN]  # refuses control characters, NUL included
    if field.enum is not None or field.format == "iana-timezone":
        return []  # an `enum` or the list of zone names says it all
    return [NO_NUL_PATTERN]


@functools.cache
def time_zone_pattern() -> str:
    """Exactly the IANA zone names a write accepts, as an ECMA-262 alternation.

    A `pattern` rather than an `enum`: client generators turn an enum into identifiers, and
    `Etc/GMT+1` and `Etc/GMT-1` (among others) collide there.
    """
    syntax = set("^$\\.*+?()[]{}|")
    names = ("".join("\\" + c if c in syntax else c for c in n) for n in time_zone_names())
    return "^(" + "|".join(names) + ")$"


def _nullable(schema: Schema) -> Schema:
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        return schema
    if isinstance(kind, list):
        if "null" not in kind:
            schema["type"] = [*kind, "null"]
        return schema
    # Only a hoisted (referenced) fragment gets here: `type` cannot sit beside its `$ref`.
    return {"anyOf": [schema, {"type": "null"}]}


def _property(field: FieldInfo, shape: Shape, defs: Schema, parent_field: str | None) -> Schema:
    schema = _value_schema(field, defs)
    if field.nullable:
        schema = _nullable(schema)
    schema["title"] = field.title or _humanize(field.name)
    description = field.description
    if field.kind == "reference" and field.references and description is None:
        description = f"Public id of the referenced {field.references}."
    if shape == "create" and field.name == parent_field:
        description = (
            f"{description or ''} Required on a flat POST; a nested POST takes it from the URL."
        ).strip()
    if shape == "create" and field.write_once:
        description = f"{description or ''} Set on create, never changed afterwards.".strip()
    if description:
        schema["description"] = description
    if field.default is not msgspec.UNSET and shape != "update":
        # A PATCH leaves an absent field unchanged, so a default would mislead there.
        schema["default"] = copy.deepcopy(field.default)
    if field.examples:
        schema["examples"] = list(field.examples)
    if shape == "read" and field.read_only:
        schema["readOnly"] = True
    if shape != "read" and field.write_only:
        schema["writeOnly"] = True
    return schema


def field_schema(field: FieldInfo) -> Schema:
    """The read-shape schema of one field (a self-contained fragment).

    >>> from registry.descriptors import FieldInfo
    >>> field_schema(FieldInfo(name="room", column="room", kind="string", max_length=100))
    {'type': ['string', 'null'], 'maxLength': 100, 'title': 'Room'}
    """
    defs: Schema = {}
    schema = _property(field, "read", defs, None)
    if defs:
        schema["$defs"] = defs
    return schema


def _in_shape(field: FieldInfo, shape: Shape) -> bool:
    if shape == "read":
        return field.is_readable
    if shape == "create":
        return field.is_writable
    return field.is_writable and not field.write_once


def _object_shape(obj: ObjectType, shape: Shape, defs: Schema) -> Schema:
    parent_field = obj.parent.field if obj.parent else None
    fields = [f for f in obj.fields if _in_shape(f, shape)]
    schema: Schema = {"type": "object"}
    schema["properties"] = {f.name: _property(f, shape, defs, parent_field) for f in fields}
    if shape != "update":
        # The read shape lists what a create requires (SPEC 7); an update requires nothing.
        schema["required"] = [f.name for f in fields if f.required and f.is_writable]
    schema["additionalProperties"] = False
    return schema


def _write_shape(obj: ObjectType, shape: Literal["create", "update"]) -> Schema:
    defs: Schema = {}
    schema = _object_shape(obj, shape, defs)
    allowed = obj.permissions.create if shape == "create" else obj.permissions.update
    title = f"{obj.title} ({shape})"
    head: Schema = {"$schema": DIALECT, "title": title}
    if not allowed:
        head["description"] = f"CRUD does not offer {shape} for {obj.name}."
    head["x-aether"] = {"name": obj.name, shape: allowed}
    if defs:
        schema["$defs"] = defs
    return head | schema


def create_schema(obj: ObjectType) -> Schema:
    """The body a create accepts: writable fields, `required` as enforced, nothing read-only.

    A standalone document (`$schema`, and `$defs` when an embedded fragment needs them).
    """
    return _write_shape(obj, "create")


def update_schema(obj: ObjectType) -> Schema:
    """The body a PATCH accepts: writable fields except write-once ones, nothing required."""
    return _write_shape(obj, "update")


def collection_paths(registry: Registry, name: str) -> list[str]:
    """Every collection path of `name`: the flat one, then one per ancestor-chain suffix.

    >>> # for event_session: /v3/crud/event_session, /v3/crud/event/{event_id}/event_session,
    >>> # /v3/crud/account/{account_id}/event/{event_id}/event_session
    """
    root_first = list(reversed(registry.ancestors(name)))
    paths = [f"{CRUD_PREFIX}/{name}"]
    for k in range(1, len(root_first) + 1):
        prefix = "".join(f"/{a.name}/{{{a.name}_id}}" for a in root_first[-k:])
        paths.append(f"{CRUD_PREFIX}{prefix}/{name}")
    return paths


def _links(obj: ObjectType, registry: Registry, base_url: str) -> Schema:
    flat = f"{base_url}{CRUD_PREFIX}/{obj.name}"
    return {
        "schema": f"{flat}/schema",
        "collection": flat,
        "item": flat + "/{id}",
        "search": f"{flat}/search",
        "nested": [base_url + p for p in collection_paths(registry, obj.name)[1:]],
    }


def _parent(obj: ObjectType) -> Schema | None:
    return {"type": obj.parent.target, "field": obj.parent.field} if obj.parent else None


def _x_aether(obj: ObjectType, registry: Registry, base_url: str) -> Schema:
    readable = [f for f in obj.fields if f.is_readable]
    relations = [r for r in (obj.parent, *obj.references, *obj.children) if r is not None]
    return {
        "name": obj.name,
        "tenant_owned": obj.tenant_owned,
        "parent": _parent(obj),
        "children": [c.name for c in obj.children],
        "references": [
            {"name": r.name, "type": r.target, "field": r.field} for r in obj.references
        ],
        "relations": {
            r.name: {"kind": r.kind, "type": r.target, "field": r.field} for r in relations
        },
        "operators": {f.name: list(operators_for(f)) for f in readable},
        "sortable": [f.name for f in readable if f.sortable],
        "default_sort": list(obj.default_sort),
        "create": obj.permissions.create,
        "update": obj.permissions.update,
        "delete": obj.permissions.delete,
        "read_role": obj.permissions.read_role,
        "write_role": obj.permissions.write_role,
        "links": _links(obj, registry, base_url),
    }


def _strip(doc: Schema, defs: Schema) -> Schema:
    """Fold a standalone write shape into the type document: its `$defs` go to the root."""
    inner = {k: v for k, v in doc.items() if k not in ("$schema", "$defs")}
    defs.update(doc.get("$defs", {}))
    return inner


def type_schema(obj: ObjectType, registry: Registry, *, base_url: str = "") -> Schema:
    """The document `GET /v3/crud/{type}/schema` answers (SPEC 7).

    The object as read (`readOnly` marked, write-only fields absent), `required` as on
    create, `$defs.create` and `$defs.update`, and the `x-aether` hints.
    """
    defs: Schema = {}
    read = _object_shape(obj, "read", defs)
    defs["create"] = _strip(create_schema(obj), defs)
    defs["update"] = _strip(update_schema(obj), defs)
    doc: Schema = {
        "$schema": DIALECT,
        "$id": f"{base_url}{CRUD_PREFIX}/{obj.name}/schema",
        "title": obj.title,
    }
    if obj.description:
        doc["description"] = obj.description
    return doc | read | {"$defs": defs, "x-aether": _x_aether(obj, registry, base_url)}


def schema_index(registry: Registry, *, base_url: str = "") -> Schema:
    """`GET /v3/crud/schema`: `{"data": [{name, title, parent, children, links}]}`."""
    data = []
    for obj in registry:
        flat = f"{base_url}{CRUD_PREFIX}/{obj.name}"
        entry: Schema = {"name": obj.name, "title": obj.title}
        if obj.description:
            entry["description"] = obj.description
        entry |= {
            "parent": _parent(obj),
            "children": [c.name for c in obj.children],
            "links": {"schema": f"{flat}/schema", "collection": flat, "search": f"{flat}/search"},
        }
        data.append(entry)
    return {"data": data}
