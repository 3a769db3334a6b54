"""Which search operators each kind of field accepts (SPEC 6).

One table, read by the search parser (to refuse what a field cannot do) and by the JSON
Schema generator (`x-aether.operators`), so the two cannot disagree.
"""

from __future__ import annotations

from registry.descriptors import FieldInfo, FieldKind

EQUALITY = ("_eq", "_neq", "_in", "_nin", "_is_null")
ORDERED = ("_gt", "_gte", "_lt", "_lte", "_between")
TEXT = ("_like", "_ilike", "_contains", "_icontains", "_startswith", "_endswith")

#: Every operator of the grammar, in a stable order.
ALL_OPERATORS: tuple[str, ...] = (*EQUALITY, *ORDERED, *TEXT)

OPERATORS_BY_KIND: dict[FieldKind, tuple[str, ...]] = {
    "id": EQUALITY,
    "reference": EQUALITY,
    "string": (*EQUALITY, *ORDERED, *TEXT),
    "enum": EQUALITY,
    "integer": (*EQUALITY, *ORDERED),
    "number": (*EQUALITY, *ORDERED),
    "decimal": (*EQUALITY, *ORDERED),
    "boolean": ("_eq", "_neq", "_is_null"),
    "datetime": (*EQUALITY, *ORDERED),
    "date": (*EQUALITY, *ORDERED),
    "object": ("_is_null",),
    "array": ("_is_null",),
}


def operators_for(field: FieldInfo) -> tuple[str, ...]:
    """The operators `field` accepts in a filter; none for fields that are not searchable."""
    if not field.searchable or field.write_only:
        return ()
    ops = OPERATORS_BY_KIND[field.kind]
    if not field.nullable:
        ops = tuple(op for op in ops if op != "_is_null")
    return ops
