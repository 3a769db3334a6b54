"""Check a search body (or the list endpoint's `filter`, `sort`, `fields`, `include`) against
an object type and turn it into a `SearchSpec` (SPEC 6). Pure: no SQL, no I/O.

Every problem is collected with its path into the request (`filter._or[1].starts_at._gte`)
and raised together as one `ValidationError` (422). Hidden, write-only and non-searchable
fields answer exactly as unknown ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from engine.search._common import (
    Errors,
    collect,
    join_path,
    relation_names,
    visible_relation,
)
from engine.search.cursor import query_signature
from engine.search.nodes import (
    MATCH_ALL,
    And,
    Condition,
    FilterNode,
    Include,
    NoneOf,
    Not,
    Or,
    RelationFilter,
    SearchSpec,
    Some,
)
from engine.search.options import (
    default_sort,
    fields_of,
    include_of,
    parse_fields,
    parse_include,
    parse_sort,
    sort_of,
)
from engine.search.values import check_text, parse_scalar
from registry.descriptors import FieldInfo, ObjectType, Registry
from registry.hints import did_you_mean
from registry.operators import ALL_OPERATORS, operators_for
from registry.searchschema import MAX_IN_VALUES, MAX_INCLUDE_DEPTH, MAX_NAMES, MAX_TEXT_LENGTH

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_FILTER_SIZE",
    "MAX_FILTER_VALUES",
    "MAX_INCLUDE_DEPTH",
    "MAX_IN_VALUES",
    "MAX_NAMES",
    "MAX_TEXT_LENGTH",
    "default_sort",
    "parse_fields",
    "parse_filter",
    "parse_include",
    "parse_search",
    "parse_sort",
    "query_integer",
]

MAX_DEPTH = 8
MAX_CONDITIONS = 200
#: Values one filter binds in all (PostgreSQL's driver takes at most 32,767 per statement).
MAX_FILTER_VALUES = 10_000
#: Filter objects plus keys in one filter: bounds the work of checking it, whatever it holds.
MAX_FILTER_SIZE = 2000
MAX_OFFSET = 2**31 - 1
BODY_KEYS = ("filter", "sort", "fields", "include", "limit", "offset", "after", "count")
LIST_OPERATORS = ("_in", "_nin")
_QUERY_INT = re.compile(r"\s*([+-]?)([0-9]+)\s*")
TEXT_OPERATORS = ("_like", "_ilike", "_contains", "_icontains", "_startswith", "_endswith")


class _FilterParser:
    def __init__(self, registry: Registry, errors: Errors, role: str | None) -> None:
        self.registry = registry
        self.errors = errors
        self.role = role
        self.conditions = 0
        self.values = 0
        self.size = 0

    def _grow(self, path: str, size: int) -> None:
        """Count objects and keys; past `MAX_FILTER_SIZE` the parse stops (422)."""
        self.size += size
        if self.size > MAX_FILTER_SIZE:
            self.errors.stop(
                path, f"the filter is too large (more than {MAX_FILTER_SIZE} objects and keys)"
            )

    def parse(self, value: object, obj: ObjectType, path: str, depth: int) -> FilterNode:
        if depth > MAX_DEPTH:
            self.errors.add(path, f"filter nested deeper than {MAX_DEPTH} levels")
            return MATCH_ALL
        if not isinstance(value, dict):
            self.errors.add(path, "expected a filter object")
            return MATCH_ALL
        self._grow(path, 1 + len(value))
        nodes: list[FilterNode] = []
        for key, item in value.items():
            kpath = join_path(path, key)
            if key in ("_and", "_or"):
                nodes.append(self._logical(key, item, obj, kpath, depth))
            elif key == "_not":
                nodes.append(Not(self.parse(item, obj, kpath, depth + 1)))
            elif not isinstance(key, str) or key.startswith("_"):
                tip = did_you_mean(key, ("_and", "_or", "_not"))
                self.errors.add(kpath, f"unknown operator: use _and, _or or _not here{tip}")
            else:
                nodes.extend(self._key(key, item, obj, kpath, depth))
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def _logical(self, key: str, item: object, obj: ObjectType, path: str, depth: int) -> Any:
        if not isinstance(item, list):
            self.errors.add(path, "expected an array of filter objects")
            return MATCH_ALL
        children = tuple(self.parse(v, obj, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
        if key == "_or":
            return Or(children)
        return children[0] if len(children) == 1 else And(children)

    def _key(
        self, key: str, item: object, obj: ObjectType, path: str, depth: int
    ) -> list[FilterNode]:
        field = obj.field(key)
        if field is not None and operators_for(field):
            return list(self._field(field, item, path))
        if field is not None and field.searchable and not field.write_only:
            self.errors.add(path, f"{key} ({field.kind}) cannot be filtered")
            return []
        rel = visible_relation(obj, key, self.registry, self.role)
        if rel is None:
            searchable = [f.name for f in obj.fields if operators_for(f)]
            candidates = searchable + relation_names(obj, self.registry, self.role)
            self.errors.add(
                path, f"unknown field or relation {key[:100]!r}{did_you_mean(key, candidates)}"
            )
            return []
        target = self.registry[rel.target]
        if rel.kind != "child":
            return [RelationFilter(rel, self.parse(item, target, path, depth + 1))]
        if not isinstance(item, dict) or not item:
            self.errors.add(path, 'a to-many relation takes {"_some": filter} or {"_none": filter}')
            return []
        self._grow(path, len(item))
        out: list[FilterNode] = []
        for sub, nested in item.items():
            spath = join_path(path, sub)
            if sub == "_some":
                out.append(Some(rel, self.parse(nested, target, spath, depth + 1)))
            elif sub == "_none":
                out.append(NoneOf(rel, self.parse(nested, target, spath, depth + 1)))
            else:
                self.errors.add(
                    spath, f"unknown key: use _some or _none{did_you_mean(sub, ('_some', '_none'))}"
                )
        return out

    def _count(self, path: str) -> bool:
        self.conditions += 1
        if self.conditions == MAX_CONDITIONS + 1:
            self.errors.add(path, f"more than {MAX_CONDITIONS} conditions in the filter")
        return self.conditions <= MAX_CONDITIONS

    def _field(self, field: FieldInfo, item: object, path: str) -> Iterable[Condition]:
        allowed = operators_for(field)
        if isinstance(item, list):
            self.errors.add(path, "expected a value or an object of operators (use _in for a list)")
            return
        if not isinstance(item, dict):
            op, arg, opath = ("_is_null", True, path) if item is None else ("_eq", item, path)
            if op not in allowed:
                self.errors.add(path, f"{field.name} is never null")
                return
            if self._count(path) and (cond := self._condition(field, op, arg, opath)):
                yield cond
            return
        if not item:
            self.errors.add(path, "expected at least one operator")
        self._grow(path, len(item))
        for op, arg in item.items():
            opath = join_path(path, op)
            if op not in allowed:
                known = op in ALL_OPERATORS
                what = f"operator {op} is not supported by" if known else "unknown operator for"
                tip = "" if known else did_you_mean(op, allowed)
                self.errors.add(
                    opath,
                    f"{what} {field.name} ({field.kind}){tip}; use one of: " + ", ".join(allowed),
                )
            elif self._count(opath) and (cond := self._condition(field, op, arg, opath)):
                yield cond

    def _condition(self, field: FieldInfo, op: str, arg: object, path: str) -> Condition | None:
        try:
            return Condition(field, op, self._value(field, op, arg, path))
        except ValueError as exc:
            self.errors.add(path, str(exc))
            return None
        except _ItemError as exc:
            self.errors.add(exc.path, exc.message)
            return None

    def _bind(self, count: int, path: str) -> None:
        """Count values the filter binds; past `MAX_FILTER_VALUES` the parse stops (422)."""
        self.values += count
        if self.values > MAX_FILTER_VALUES:
            self.errors.stop(path, f"the filter binds more than {MAX_FILTER_VALUES} values in all")

    def _value(self, field: FieldInfo, op: str, arg: object, path: str) -> Any:
        if op == "_is_null":
            if not isinstance(arg, bool):
                raise ValueError("expected true or false")
            return arg
        if op in TEXT_OPERATORS:
            self._bind(1, path)
            return check_text(arg)
        if op in LIST_OPERATORS or op == "_between":
            if not isinstance(arg, list):
                raise ValueError("expected an array")
            if op == "_between" and len(arg) != 2:
                raise ValueError("expected an array of two values [low, high]")
            if not arg:
                raise ValueError("expected a non-empty array")
            if len(arg) > MAX_IN_VALUES:
                raise ValueError(f"at most {MAX_IN_VALUES} values")
            self._bind(len(arg), path)
            return tuple(_item(field, v, f"{path}[{i}]") for i, v in enumerate(arg))
        self._bind(1, path)
        return parse_scalar(field, arg)


class _ItemError(Exception):
    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message


def _item(field: FieldInfo, value: object, path: str) -> Any:
    try:
        return parse_scalar(field, value)
    except ValueError as exc:
        raise _ItemError(path, str(exc)) from None


def parse_filter(
    value: object,
    obj: ObjectType,
    registry: Registry,
    *,
    path: str = "filter",
    role: str | None = None,
) -> FilterNode:
    """Check a filter (already JSON-decoded) against `obj`; raise `ValidationError` (422).

    `role`, when given, hides relations to types that role may not read (they answer as
    unknown). Enum values outside the enum are refused (422), not silently unmatched.
    """
    node: FilterNode = collect(
        lambda errors: _FilterParser(registry, errors, role).parse(value, obj, path, 1)
    )
    return node


def query_integer(raw: str) -> int | str:
    """A list query parameter as an integer when it is written as one (any size), else as is.

    Out-of-range values stay integers so the check says "out of range", not "expected an
    integer"; past 100 digits the exact value no longer matters (nor costs a conversion).

    >>> query_integer("20"), query_integer(" -3 "), query_integer("2" * 200) > 2**63
    (20, -3, True)
    """
    match = _QUERY_INT.fullmatch(raw)
    if match is None:
        return raw
    sign, digits = match.groups()
    value = int(digits) if len(digits) <= 100 else 10**100
    return -value if sign == "-" else value


def _bounded_int(
    body: dict[str, Any], key: str, default: int, low: int, high: int, errors: Errors
) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema's `integer` includes 10.0
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(key, "expected an integer")
    elif not low <= value <= high:
        errors.add(key, f"out of range: must be between {low} and {high}")
    else:
        return value
    return default


def parse_search(
    body: object,
    obj: ObjectType,
    registry: Registry,
    *,
    max_page_size: int,
    default_limit: int = 50,
    role: str | None = None,
) -> SearchSpec:
    """Check a decoded `POST .../search` body against `obj` (SPEC 6); 422 on any problem.

    Absent `sort` means the type's default sort. `after` is kept as the raw token and
    `signature` binds cursors to this query's filter and sort.
    """
    spec: SearchSpec = collect(
        lambda errors: _search(body, obj, registry, max_page_size, default_limit, role, errors)
    )
    return spec


def _search(
    body: object,
    obj: ObjectType,
    registry: Registry,
    max_page_size: int,
    default_limit: int,
    role: str | None,
    errors: Errors,
) -> SearchSpec:
    if not isinstance(body, dict):
        errors.stop("body", "expected a JSON object")
    for key in body:
        if key not in BODY_KEYS:
            errors.add(join_path("", key), f"unknown key{did_you_mean(key, BODY_KEYS)}")
    node: FilterNode = MATCH_ALL
    if body.get("filter") is not None:
        node = _FilterParser(registry, errors, role).parse(body["filter"], obj, "filter", 1)
    sort = default_sort(obj)
    if body.get("sort") is not None:
        sort = sort_of(body["sort"], obj, "sort", errors) or sort
    fields = (
        None if body.get("fields") is None else fields_of(body["fields"], obj, "fields", errors)
    )
    include: tuple[Include, ...] = ()
    if body.get("include") is not None:
        include = include_of(body["include"], obj, registry, "include", role, errors)
    limit = _bounded_int(body, "limit", default_limit, 1, max_page_size, errors)
    offset = _bounded_int(body, "offset", 0, 0, MAX_OFFSET, errors)
    after = body.get("after")
    if after is not None and not isinstance(after, str):
        errors.add("after", "expected a cursor string or null")
        after = None
    elif after is not None and offset:
        errors.add("offset", "offset cannot be combined with after")
    count = body.get("count")
    if count is None:
        count = False
    elif not isinstance(count, bool):
        errors.add("count", "expected true or false")
        count = False
    errors.raise_if_any()
    return SearchSpec(
        type_name=obj.name,
        filter=node,
        sort=sort,
        fields=fields,
        include=include,
        limit=limit,
        offset=offset,
        after=after,
        count=count,
        signature=query_signature(obj.name, node, sort),
    )
