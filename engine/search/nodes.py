"""The checked search AST and spec: what `parse.py` produces and `compile.py` consumes.

Every node is a frozen msgspec Struct holding descriptors (`FieldInfo`, `Relation`) and
values already converted to Python (aware UTC datetimes, ints, floats, tuples for lists).
`render_filter` turns a node back into a canonical JSON-able filter: re-parsing it gives
the same node, and its bytes are what cursors are bound to.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any, TypeAlias

import msgspec

from registry.descriptors import FieldInfo, Relation


class And(msgspec.Struct, frozen=True):
    """Every child matches; no children matches every row."""

    children: tuple[FilterNode, ...]


class Or(msgspec.Struct, frozen=True):
    """At least one child matches; no children matches no row."""

    children: tuple[FilterNode, ...]


class Not(msgspec.Struct, frozen=True):
    """Boolean negation of the child's match (a row matches a filter or it does not)."""

    child: FilterNode


class Condition(msgspec.Struct, frozen=True):
    """`field op value`. `value` is a scalar, a tuple (`_in`, `_nin`, `_between`), a bool
    (`_is_null`) or a string (text operators). For `id`/`reference` fields a string that is
    not a well-formed public id is replaced by `""`, which matches no row."""

    field: FieldInfo
    op: str
    value: Any


class RelationFilter(msgspec.Struct, frozen=True):
    """A to-one relation (parent or reference) whose target row matches `node`."""

    relation: Relation
    node: FilterNode


class Some(msgspec.Struct, frozen=True):
    """A to-many relation (child type) with at least one row matching `node`."""

    relation: Relation
    node: FilterNode


class NoneOf(msgspec.Struct, frozen=True):
    """A to-many relation (child type) with no row matching `node`."""

    relation: Relation
    node: FilterNode


FilterNode: TypeAlias = And | Or | Not | Condition | RelationFilter | Some | NoneOf

#: The filter that matches every row.
MATCH_ALL = And(())


class SortKey(msgspec.Struct, frozen=True):
    field: FieldInfo
    descending: bool = False


class Include(msgspec.Struct, frozen=True):
    """A dotted include (`event_file.file`) resolved to its chain of relations."""

    path: str
    relations: tuple[Relation, ...]


class SearchSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A checked search request for one object type.

    `fields` is None for every readable field, else the names to return (`id` first).
    `sort` already holds the type's default sort when the request named none; the
    internal tie-breaker is added by `compile_order`. `after` is the raw cursor token:
    decode it with `cursor.decode_cursor(..., sort_signature=spec.signature)`.
    """

    type_name: str
    filter: FilterNode = MATCH_ALL
    sort: tuple[SortKey, ...] = ()
    fields: tuple[str, ...] | None = None
    include: tuple[Include, ...] = ()
    limit: int = 50
    offset: int = 0
    after: str | None = None
    count: bool = False
    signature: str = ""


def render_value(value: Any) -> Any:
    """A filter value as JSON (datetimes in UTC with `Z`, decimals as strings)."""
    if isinstance(value, tuple):
        return [render_value(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def render_filter(node: FilterNode) -> dict[str, Any]:
    """The canonical JSON filter for `node`; `parse_filter` of it returns an equal node.

    >>> render_filter(And(()))
    {}
    """
    if isinstance(node, And):
        if len(node.children) == 1:
            return render_filter(node.children[0])
        if not node.children:
            return {}
        return {"_and": [render_filter(c) for c in node.children]}
    if isinstance(node, Or):
        return {"_or": [render_filter(c) for c in node.children]}
    if isinstance(node, Not):
        return {"_not": render_filter(node.child)}
    if isinstance(node, Condition):
        return {str(node.field.name): {node.op: render_value(node.value)}}
    if isinstance(node, RelationFilter):
        return {str(node.relation.name): render_filter(node.node)}
    if isinstance(node, Some):
        return {str(node.relation.name): {"_some": render_filter(node.node)}}
    return {str(node.relation.name): {"_none": render_filter(node.node)}}
