"""Hypothesis strategies for search filters (JSON, as a client sends them) over the registry.

Values are drawn from `pools` (values present in a data set, so conditions often match)
mixed with arbitrary ones of the right kind. Shared by the parser's unit tests and the
compiler's integration test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

from registry.descriptors import FieldInfo, ObjectType, Registry
from registry.operators import operators_for

#: Mixed case, LIKE/GLOB specials, the LIKE escape, spaces and Unicode with no upper case
#: (so every database's lower() agrees on it).
ALPHABET = "aAbBzZ%_!~\\ *?[]éß日🎉"
TEXT_OPS = ("_like", "_ilike", "_contains", "_icontains", "_startswith", "_endswith")

Pools = Mapping[tuple[str, str], Sequence[Any]]  # (type, field name) -> JSON values seen


def texts(max_size: int = 4) -> st.SearchStrategy[str]:
    return st.text(alphabet=ALPHABET, max_size=max_size)


def rfc3339(value: dt.datetime, offset_minutes: int) -> str:
    tz = dt.timezone(dt.timedelta(minutes=offset_minutes))
    text = value.astimezone(tz).isoformat()
    return text.replace("+00:00", "Z") if offset_minutes == 0 else text


def datetimes() -> st.SearchStrategy[str]:
    moments = st.datetimes(
        min_value=dt.datetime(2019, 1, 1),
        max_value=dt.datetime(2031, 1, 1),
        timezones=st.just(dt.UTC),
    )
    return st.builds(rfc3339, moments, st.sampled_from([0, 0, 60, -300, 330, 840]))


def scalar_values(obj: ObjectType, field: FieldInfo, pools: Pools) -> st.SearchStrategy[Any]:
    seen = list(pools.get((obj.name, field.name), ()))
    kind = field.kind
    if kind in ("id", "reference"):
        other = st.one_of(texts(5), st.just("A" * 22), st.just("not-a-real-id-but-22ch"))
    elif kind == "string":
        other = texts()
    elif kind == "enum":
        other = st.sampled_from(field.enum or ("x",))
    elif kind == "integer":
        other = st.one_of(
            st.integers(-3, 1003),
            st.sampled_from([2**31, -(2**31) - 1, 2**40, 2**63 - 1, -(2**63)]),
        )
    elif kind == "number":
        other = st.floats(-1e6, 1e6, allow_nan=False)
    elif kind == "boolean":
        other = st.booleans()
    elif kind == "datetime":
        other = datetimes()
    elif kind == "date":
        other = st.dates().map(dt.date.isoformat)
    else:
        other = st.just(None)
    return st.one_of(st.sampled_from(seen), other) if seen else other


def _pattern_values(obj: ObjectType, field: FieldInfo, pools: Pools) -> st.SearchStrategy[str]:
    seen = [v for v in pools.get((obj.name, field.name), ()) if isinstance(v, str)]
    pieces = st.sampled_from(seen).flatmap(
        lambda s: st.tuples(st.integers(0, len(s)), st.integers(0, len(s))).map(
            lambda ij: s[min(ij) : max(ij)]
        )
    )
    return st.one_of(texts(3), pieces) if seen else texts(3)


def operator_arguments(
    obj: ObjectType, field: FieldInfo, op: str, pools: Pools
) -> st.SearchStrategy[Any]:
    value = scalar_values(obj, field, pools)
    if op == "_is_null":
        return st.booleans()
    if op in ("_in", "_nin"):
        return st.lists(value, min_size=1, max_size=4)
    if op == "_between":
        return st.lists(value, min_size=2, max_size=2)
    if op in ("_like", "_ilike"):
        return st.one_of(_pattern_values(obj, field, pools), texts(4))
    if op in TEXT_OPS:
        return _pattern_values(obj, field, pools)
    return value


def field_entries(obj: ObjectType, pools: Pools) -> st.SearchStrategy[tuple[str, Any]]:
    choices = [f for f in obj.fields if operators_for(f)]

    def entry(field: FieldInfo) -> st.SearchStrategy[tuple[str, Any]]:
        ops = operators_for(field)
        one_op = st.sampled_from(ops).flatmap(
            lambda op: operator_arguments(obj, field, op, pools).map(lambda a: {op: a})
        )
        ops_object = st.lists(one_op, min_size=1, max_size=2).map(
            lambda ds: {k: v for d in ds for k, v in d.items()}
        )
        forms = [ops_object, scalar_values(obj, field, pools)]
        if "_is_null" in ops:
            forms.append(st.just(None))
        return st.one_of(*forms).map(lambda v: (field.name, v))

    return st.sampled_from(choices).flatmap(entry)


def filters(
    registry: Registry,
    type_name: str,
    pools: Pools,
    *,
    depth: int = 3,
    types: frozenset[str] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Filter objects on `type_name` nesting at most `depth` levels below the top; relations
    only to `types` (all when None)."""
    obj = registry[type_name]
    entries: list[st.SearchStrategy[tuple[str, Any]]] = [field_entries(obj, pools)]
    if depth > 0:
        nested = st.deferred(
            lambda: filters(registry, type_name, pools, depth=depth - 1, types=types)
        )
        entries.append(st.tuples(st.sampled_from(["_and", "_or"]), st.lists(nested, max_size=3)))
        entries.append(st.tuples(st.just("_not"), nested))
        for rel in (obj.parent, *obj.references, *obj.children):
            if rel is None or (types is not None and rel.target not in types):
                continue
            inner = filters(registry, rel.target, pools, depth=depth - 1, types=types)
            if rel.kind == "child":
                wrapped = st.tuples(st.sampled_from(["_some", "_none"]), inner).map(
                    lambda t: {t[0]: t[1]}
                )
                entries.append(st.tuples(st.just(rel.name), wrapped))
            else:
                entries.append(st.tuples(st.just(rel.name), inner))
    return st.lists(st.one_of(*entries), max_size=3).map(dict)
