"""The search grammar (SPEC 6) as JSON Schema, built from object-type descriptors.

`filter_schema` describes a type's filter object (per-field operators, boolean nesting,
relations) and `search_schema` the body of `POST .../{type}/search`. Pure functions over
`registry.descriptors`, sharing the value shapes of `registry.jsonschema`.
"""

from __future__ import annotations

from registry.descriptors import FieldInfo, ObjectType, Registry
from registry.jsonschema import NO_NUL_PATTERN, Schema, _value_schema
from registry.operators import operators_for

__all__ = ["filter_schema", "include_paths", "search_schema"]

#: Most values an `_in`/`_nin` list may hold (SPEC 6 limits).
MAX_IN_VALUES = 1000
#: Most characters of one text value in a filter (SQLite refuses LIKE patterns past 50 KB).
MAX_TEXT_LENGTH = 1000
#: Most entries in one `sort`, `fields` or `include` list: more can only be repeats.
MAX_NAMES = 100
#: Most rows `offset` may skip, and how deep `include` nests (SPEC 6 limits).
MAX_OFFSET = 2**31 - 1
MAX_INCLUDE_DEPTH = 3
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INCLUDE_PATTERN = "^[a-z_][a-z0-9_]*(\\.[a-z_][a-z0-9_]*)*$"
_TEXT_OPERATORS = frozenset(
    {"_like", "_ilike", "_contains", "_icontains", "_startswith", "_endswith"}
)


def _filter_value(field: FieldInfo) -> Schema | None:
    """The JSON a filter compares `field` with; None for kinds that only test for null."""
    if field.kind in ("object", "array"):
        return None
    if field.kind in ("id", "reference"):
        return {"type": "string"}  # any other string matches nothing
    if field.kind == "string":
        return {"type": "string", "maxLength": MAX_TEXT_LENGTH, "pattern": NO_NUL_PATTERN}
    if field.kind == "integer":
        return {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
    value = _value_schema(field, {})
    # Comparisons need the type; only enums and decimals also constrain the value's text.
    keep = {"type", "format", "enum", "pattern"} if field.kind in ("decimal", "enum") else None
    keep = keep or {"type", "format"}
    return {k: v for k, v in value.items() if k in keep}


def _operator_value(op: str, value: Schema) -> Schema:
    if op == "_is_null":
        return {"type": "boolean"}
    if op in _TEXT_OPERATORS:
        return {"type": "string", "maxLength": MAX_TEXT_LENGTH, "pattern": NO_NUL_PATTERN}
    if op in ("_in", "_nin"):
        return {"type": "array", "items": value, "minItems": 1, "maxItems": MAX_IN_VALUES}
    if op == "_between":
        return {"type": "array", "items": value, "minItems": 2, "maxItems": 2}
    return value


def filter_schema(obj: ObjectType, ref: str = "#/$defs/{type}.filter") -> Schema:
    """The filter object of `obj`'s search: per-field operator objects (exactly the operators
    `operators_for` allows), `_and`/`_or`/`_not`, to-one relations and `_some`/`_none` on
    children. Recursion goes through `ref`, formatted with a type name."""

    def to(name: str) -> Schema:
        return {"$ref": ref.format(type=name)}

    props: Schema = {}
    for field in obj.fields:
        ops = operators_for(field)
        if not ops:
            continue
        value = _filter_value(field) or {}
        by_op = {op: _operator_value(op, value) for op in ops}
        operators = {
            "type": "object",
            "properties": by_op,
            "additionalProperties": False,
            "minProperties": 1,
        }
        # A bare scalar is shorthand for `_eq`, a bare null for `_is_null: true`.
        shorthand = [value] if "_eq" in ops else []
        shorthand += [{"type": "null"}] if "_is_null" in ops else []
        props[field.name] = {"anyOf": [*shorthand, operators]} if shorthand else operators
    props["_and"] = {"type": "array", "items": to(obj.name)}
    props["_or"] = {"type": "array", "items": to(obj.name)}
    props["_not"] = to(obj.name)
    for rel in (obj.parent, *obj.references):
        if rel is not None:
            props[rel.name] = to(rel.target)
    for child in obj.children:
        props[child.name] = {
            "type": "object",
            "properties": {"_some": to(child.target), "_none": to(child.target)},
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
        }
    return {
        "title": f"{obj.title} filter",
        "type": "object",
        "properties": props,
        "additionalProperties": False,
    }


def include_paths(obj: ObjectType, registry: Registry, depth: int = MAX_INCLUDE_DEPTH) -> list[str]:
    """Every dotted relation path `include` accepts from `obj`, at most `depth` levels."""
    out: list[str] = []
    for rel in (obj.parent, *obj.references, *obj.children):
        if rel is None or rel.target not in registry.types:
            continue
        out.append(rel.name)
        if depth > 1:
            out += [
                f"{rel.name}.{p}" for p in include_paths(registry[rel.target], registry, depth - 1)
            ]
    return out


def _nullable(schema: Schema) -> Schema:
    """`schema` or null: the search body treats a null key as absent."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return schema | {"type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def search_schema(
    obj: ObjectType,
    max_page_size: int = 500,
    ref: str = "#/$defs/{type}.filter",
    registry: Registry | None = None,
) -> Schema:
    """The body of `POST .../{type}/search`.

    Says what the parser checks wherever JSON Schema can: sort keys at most once per field,
    include paths that exist (given `registry`), `offset` only as 0 next to a cursor. A
    cursor's integrity, the filter's depth and condition count stay server-side.
    """
    readable = [f.name for f in obj.fields if f.is_readable]
    sortable = [f.name for f in obj.fields if f.is_readable and f.sortable]
    includes = [r.name for r in (obj.parent, *obj.references, *obj.children) if r is not None]
    sort: Schema = {"type": "array", "items": {"type": "string"}, "maxItems": MAX_NAMES}
    if sortable:
        sort["items"]["enum"] = [key for name in sortable for key in (name, f"-{name}")]
        sort["allOf"] = [
            {"contains": {"enum": [name, f"-{name}"]}, "minContains": 0, "maxContains": 1}
            for name in sortable
        ]
    include_item: Schema = {"type": "string", "pattern": INCLUDE_PATTERN}
    if registry is not None:
        include_item = {"type": "string", "enum": include_paths(obj, registry)}
    properties: Schema = {
        "filter": {"$ref": ref.format(type=obj.name)},
        "sort": sort,
        "fields": {
            "type": "array",
            "items": {"type": "string", "enum": readable},
            "maxItems": MAX_NAMES,
        },
        "include": {
            "type": "array",
            "maxItems": MAX_NAMES,
            "items": include_item,
            "description": "Relations to embed, dotted for depth; here: "
            + (", ".join(includes) or "none"),
        },
        "limit": {"type": "integer", "minimum": 1, "maximum": max_page_size, "default": 50},
        "offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
        "after": {"type": ["string", "null"], "description": "The `next` cursor of a page."},
        "count": {"type": "boolean", "default": False},
    }
    return {
        "title": f"{obj.title} search",
        "type": "object",
        "properties": {k: v if k == "after" else _nullable(v) for k, v in properties.items()},
        "additionalProperties": False,
        # A cursor already says where the page starts.
        "if": {"properties": {"after": {"type": "string"}}, "required": ["after"]},
        "then": {"properties": {"offset": {"enum": [0, None]}}},
    }
