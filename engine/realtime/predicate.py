"""Subscription filters: the search grammar on an object's own fields, evaluated in Python.

`parse_subscription_filter` checks a filter with the search parser (`engine.search`) and
refuses relations (422); `compile_predicate` turns the same parsed tree into a function of
a published object (as JSON decodes it) that answers exactly as the SQL compiler
(`engine.search.compile`) would for that row: two-valued logic, comparisons never match
NULL, text compared by code point, `_ilike`/`_icontains` folding case as the database's
`lower()` does (ASCII only on SQLite), `%`/`_`/backslash in `_like` patterns.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Mapping
from typing import Any

from engine.errors import ErrorDetail, ValidationError
from engine.search import And, Condition, FilterNode, Not, Or, parse_filter
from engine.search._common import join_path
from engine.search.compile import like_tokens, literal_tokens, normalise_dialect
from engine.search.values import parse_datetime
from registry.descriptors import FieldInfo, ObjectType, Registry

Item = Mapping[str, Any]
Predicate = Callable[[Item], bool]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def parse_subscription_filter(
    value: object, obj: ObjectType, registry: Registry, *, role: str, path: str = "filter"
) -> FilterNode:
    """`value` checked as a search filter on `obj`'s own fields; relations are a 422."""
    relations = list(_relation_paths(value, obj, path))
    if relations:
        raise ValidationError(
            [ErrorDetail(p, "relations cannot be used in a subscription filter") for p in relations]
        )
    return parse_filter(value, obj, registry, path=path, role=role)


def _relation_paths(value: object, obj: ObjectType, path: str) -> list[str]:
    found: list[str] = []
    if not isinstance(value, dict):
        return found
    for key, item in value.items():
        kpath = join_path(path, key)
        if key in ("_and", "_or") and isinstance(item, list):
            for i, nested in enumerate(item):
                found.extend(_relation_paths(nested, obj, f"{kpath}[{i}]"))
        elif key == "_not":
            found.extend(_relation_paths(item, obj, kpath))
        elif isinstance(key, str) and obj.field(key) is None and obj.relation(key) is not None:
            found.append(kpath)
        if len(found) >= 50:
            break
    return found


def compile_predicate(node: FilterNode, dialect: str) -> Predicate:
    """A function of a published object (`{"name": ..., "starts_at": "2026-...Z"}`) that is
    true exactly when the SQL compiler's WHERE clause for `node` would select its row.

    >>> from registry.descriptors import FieldInfo
    >>> name = FieldInfo(name="name", column="name", kind="string")
    >>> match = compile_predicate(Condition(name, "_icontains", "GA"), "postgresql")
    >>> match({"name": "Gala"}), match({"name": None})
    (True, False)
    """
    fold = _fold_for(normalise_dialect(dialect))
    return _compile(node, fold)


def _fold_for(dialect: str) -> Callable[[str], str]:
    if dialect == "sqlite":  # SQLite's lower() folds ASCII letters only
        return lambda text: text.translate(_ASCII_LOWER)
    return _unicode_lower


def _unicode_lower(text: str) -> str:
    # Databases map one character to one; Python's special cases (İ -> i̇) are left alone.
    return "".join(low if len(low := ch.lower()) == 1 else ch for ch in text)


def _compile(node: FilterNode, fold: Callable[[str], str]) -> Predicate:
    if isinstance(node, And):
        parts = [_compile(c, fold) for c in node.children]
        return lambda item: all(p(item) for p in parts)
    if isinstance(node, Or):
        parts = [_compile(c, fold) for c in node.children]
        return lambda item: any(p(item) for p in parts)
    if isinstance(node, Not):
        inner = _compile(node.child, fold)
        return lambda item: not inner(item)
    if isinstance(node, Condition):
        return _condition(node, fold)
    raise ValidationError.single("filter", "relations cannot be used in a subscription filter")


def _coerce(field: FieldInfo) -> Callable[[Any], Any]:
    """How a JSON value of `field` becomes the Python value filters compare with."""
    kind = field.kind
    if kind == "datetime":
        return lambda v: parse_datetime(v) if isinstance(v, str) else v
    if kind == "date":
        return lambda v: dt.date.fromisoformat(v) if isinstance(v, str) else v
    if kind == "decimal":
        return lambda v: decimal.Decimal(str(v))
    if kind == "number":
        return float
    return lambda v: v


def _pattern(tokens: list[tuple[str, str]], fold: Callable[[str], str] | None) -> re.Pattern[str]:
    parts = []
    for kind, ch in tokens:
        if kind == "%":
            parts.append(".*")
        elif kind == "_":
            parts.append(".")
        else:
            parts.append(re.escape(fold(ch) if fold else ch))
    return re.compile("".join(parts), re.DOTALL)


def _condition(cond: Condition, fold: Callable[[str], str]) -> Predicate:
    name, op, want = cond.field.name, cond.op, cond.value
    if op == "_is_null":
        return lambda item: (item.get(name) is None) is want
    coerce = _coerce(cond.field)
    test = _test(op, want, fold)

    def check(item: Item) -> bool:
        value = item.get(name)
        return value is not None and test(coerce(value))

    return check


def _test(op: str, want: Any, fold: Callable[[str], str]) -> Callable[[Any], bool]:
    if op == "_eq":
        return lambda v: bool(v == want)
    if op == "_neq":
        return lambda v: bool(v != want)
    if op == "_gt":
        return lambda v: bool(v > want)
    if op == "_gte":
        return lambda v: bool(v >= want)
    if op == "_lt":
        return lambda v: bool(v < want)
    if op == "_lte":
        return lambda v: bool(v <= want)
    if op in ("_in", "_nin"):
        wanted = frozenset(want)
        return (lambda v: v in wanted) if op == "_in" else (lambda v: v not in wanted)
    if op == "_between":
        low, high = want
        return lambda v: bool(low <= v <= high)
    if op in ("_like", "_ilike"):
        tokens = like_tokens(want)
    else:
        tokens = literal_tokens(want)
        tokens = {
            "_startswith": [*tokens, ("%", "")],
            "_endswith": [("%", ""), *tokens],
        }.get(op, [("%", ""), *tokens, ("%", "")])
    if op in ("_ilike", "_icontains"):
        folded = _pattern(tokens, fold)
        return lambda v: folded.fullmatch(fold(v)) is not None
    exact = _pattern(tokens, None)
    return lambda v: exact.fullmatch(v) is not None
