"""Recursive search (SPEC 6): parse a body into a checked `SearchSpec`, compile its filter
and sort into SQLAlchemy Core, and carry keyset positions in signed cursors.

parse -> nodes (the AST) -> compile; `cursor` encodes and verifies page positions.
"""

from __future__ import annotations

from engine.search.compile import (
    SLOT_PREFIX,
    OrderColumn,
    compile_filter,
    compile_order,
    cursor_values,
    filter_shape,
    keyset_predicate,
    order_by_clauses,
    scope_predicate,
)
from engine.search.cursor import decode_cursor, encode_cursor, query_signature
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
    SortKey,
    render_filter,
)
from engine.search.parse import (
    default_sort,
    parse_fields,
    parse_filter,
    parse_include,
    parse_search,
    parse_sort,
    query_integer,
)

__all__ = [
    "MATCH_ALL",
    "SLOT_PREFIX",
    "And",
    "Condition",
    "FilterNode",
    "Include",
    "NoneOf",
    "Not",
    "Or",
    "OrderColumn",
    "RelationFilter",
    "SearchSpec",
    "Some",
    "SortKey",
    "compile_filter",
    "compile_order",
    "cursor_values",
    "decode_cursor",
    "default_sort",
    "encode_cursor",
    "filter_shape",
    "keyset_predicate",
    "order_by_clauses",
    "parse_fields",
    "parse_filter",
    "parse_include",
    "parse_search",
    "parse_sort",
    "query_integer",
    "query_signature",
    "render_filter",
    "scope_predicate",
]
