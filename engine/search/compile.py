"""Compile a checked filter into a SQLAlchemy Core WHERE clause, per dialect (SPEC 6).

`dialect` is `"sqlite"`, `"mysql"` (MariaDB; `"mariadb"` is accepted) or `"postgresql"`,
passed explicitly so the same AST gives the same answers everywhere:

- every predicate is two-valued (a nullable column is guarded with IS NOT NULL), so `_not`
  is the boolean negation of its child; comparisons never match NULL (`_neq`/`_nin`
  included, as in PostgREST): only `_is_null` finds NULLs;
- `_eq _neq _in _nin _like _contains _startswith _endswith` and ordering comparisons on
  text are case-sensitive by code point: MariaDB compares under `utf8mb4_nopad_bin`,
  PostgreSQL orders under `COLLATE "C"`, SQLite matches patterns with GLOB;
- `_ilike`/`_icontains` compare `lower()` of both sides: ASCII folds everywhere, other
  letters fold as the database's `lower()` does (not at all on SQLite);
- `_like` patterns use `%`, `_` and a backslash escape on every database;
- relations are EXISTS subqueries on aliases, each scoped to the caller's account; public
  ids compare `id_random` (of the row or of the referenced row, in the same account).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa

from engine.errors import BadRequestError
from engine.search.nodes import (
    And,
    Condition,
    FilterNode,
    Not,
    Or,
    RelationFilter,
    Some,
    SortKey,
)
from registry.descriptors import ObjectType, Registry

Predicate = sa.ColumnElement[bool]

#: The escape character of every LIKE the engine writes: not `\`, which MariaDB also treats
#: as a string-literal escape.
LIKE_ESCAPE = "!"
#: Exact, code-point comparison on MariaDB (NO PAD: trailing spaces count).
MARIADB_BINARY = "utf8mb4_nopad_bin"
#: The collation string columns are ordered (and range-compared) under, per dialect.
ORDER_COLLATION = {"mysql": MARIADB_BINARY, "postgresql": "C"}
TEXT_KINDS = frozenset({"string", "enum", "id"})
DIALECTS = frozenset({"sqlite", "mysql", "postgresql"})

_COMPARE = {"_eq", "_neq", "_gt", "_gte", "_lt", "_lte"}
# For an integer outside the column's range, `column op value` on a stored value is constant:
# (when the value is above the range, when below).
_OUT_OF_RANGE = {
    "_eq": (False, False),
    "_neq": (True, True),
    "_gt": (False, True),
    "_gte": (False, True),
    "_lt": (True, False),
    "_lte": (True, False),
}


def normalise_dialect(dialect: str) -> str:
    name = "mysql" if dialect == "mariadb" else dialect
    if name not in DIALECTS:
        raise ValueError(f"unsupported dialect {dialect!r}")
    return name


def scope_predicate(obj: ObjectType, table: sa.FromClause, account_id: int | None) -> Predicate:
    """Rows of `obj` in `table` that belong to `account_id` (None: a system principal)."""
    if account_id is None:
        return sa.true()
    if obj.tenant_owned:
        return table.c.account_id == account_id
    if "account_id" not in table.c:  # the tenant table itself: an account owns only itself
        return table.c.id == account_id
    return sa.true()


# -- patterns ---------------------------------------------------------------------------

Token = tuple[str, str]  # ("lit", char) | ("%", "") | ("_", "")


def like_tokens(pattern: str) -> list[Token]:
    """A `_like` pattern: `%` any run, `_` one character, `\\` makes the next one literal
    (a trailing lone backslash is itself literal)."""
    tokens: list[Token] = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "\\":
            tokens.append(("lit", next(chars, "\\")))
        elif ch in "%_":
            tokens.append((ch, ""))
        else:
            tokens.append(("lit", ch))
    return tokens


def literal_tokens(text: str) -> list[Token]:
    return [("lit", ch) for ch in text]


def to_like(tokens: list[Token]) -> str:
    """A LIKE pattern escaped with `LIKE_ESCAPE`."""
    out = []
    for kind, ch in tokens:
        if kind != "lit":
            out.append(kind)
        elif ch in ("%", "_", LIKE_ESCAPE):
            out.append(LIKE_ESCAPE + ch)
        else:
            out.append(ch)
    return "".join(out)


def to_glob(tokens: list[Token]) -> str:
    """The same pattern for SQLite's case-sensitive GLOB (`*`, `?`, `[...]` made literal)."""
    special = {"*": "[*]", "?": "[?]", "[": "[[]"}
    out = []
    for kind, ch in tokens:
        if kind == "%":
            out.append("*")
        elif kind == "_":
            out.append("?")
        else:
            out.append(special.get(ch, ch))
    return "".join(out)


def text_pattern(op: str, value: str, dialect: str) -> str:
    """What a pattern operator binds: a LIKE pattern, or a GLOB one for the case-sensitive
    operators on SQLite."""
    tokens = _text_tokens(op, value)
    if dialect == "sqlite" and op not in ("_ilike", "_icontains"):
        return to_glob(tokens)
    return to_like(tokens)


def _text_tokens(op: str, value: str) -> list[Token]:
    if op in ("_like", "_ilike"):
        return like_tokens(value)
    lits = literal_tokens(value)
    any_run: list[Token] = [("%", "")]
    if op == "_startswith":
        return lits + any_run
    if op == "_endswith":
        return any_run + lits
    return any_run + lits + any_run


# -- the compiler -------------------------------------------------------------------------


def _int_bounds(column: Any) -> tuple[int, int]:
    col_type = column.type
    if isinstance(col_type, sa.types.TypeDecorator):
        col_type = col_type.impl_instance
    if isinstance(col_type, sa.BigInteger):
        return -(2**63), 2**63 - 1
    if isinstance(col_type, sa.SmallInteger):
        return -(2**15), 2**15 - 1
    return -(2**31), 2**31 - 1


class Constant(NamedTuple):
    """A condition that is the same on every stored value."""

    matches: bool


def fold_integer(op: str, value: Any, bounds: tuple[int, int]) -> Any:
    """An integer condition's value with what the column cannot hold taken out, or a
    `Constant` when the condition is the same on every stored value. PostgreSQL refuses to
    bind an out-of-range integer to an int4 parameter (a 500), so those never reach a bind."""
    low, high = bounds
    if op in _COMPARE and not low <= value <= high:
        above, below = _OUT_OF_RANGE[op]
        return Constant(above if value > high else below)
    if op in ("_in", "_nin"):
        kept = tuple(v for v in value if low <= v <= high)
        return kept if kept else Constant(op == "_nin")
    if op == "_between":
        lo, hi = max(value[0], low), min(value[1], high)
        return Constant(False) if lo > hi else (lo, hi)
    return value


#: Bind parameters a filter's values take in slot mode: `:v0`, `:v1`…
SLOT_PREFIX = "v"


class _Compiler:
    def __init__(
        self,
        registry: Registry,
        tables: Mapping[str, sa.Table],
        account_id: int | None,
        dialect: str,
        slots: list[Any] | None = None,
    ) -> None:
        self.registry = registry
        self.tables = tables
        self.account_id = account_id
        self.dialect = normalise_dialect(dialect)
        #: When a list, every value becomes the bind parameter `:v<n>` and is appended here
        #: (a statement for every filter of the same shape: see `filter_shape`).
        self.slots = slots

    def value(self, value: Any, type_: Any = None) -> Any:
        """`value` (a literal of `type_` when given), or in slot mode the next bind parameter
        standing for it; either way the value is bound, never written into the SQL."""
        if self.slots is None:
            return value if type_ is None else sa.literal(value, type_)
        if isinstance(value, sa.BindParameter):  # a slot already (bound once, used twice)
            return value
        self.slots.append(value)
        return sa.bindparam(f"{SLOT_PREFIX}{len(self.slots) - 1}", type_=type_)

    def node(self, node: FilterNode, obj: ObjectType, table: sa.FromClause) -> Predicate:
        if isinstance(node, And):
            parts = [self.node(c, obj, table) for c in node.children]
            return sa.and_(*parts) if parts else sa.true()
        if isinstance(node, Or):
            parts = [self.node(c, obj, table) for c in node.children]
            return sa.or_(*parts) if parts else sa.false()
        if isinstance(node, Not):
            return sa.not_(self.node(node.child, obj, table))
        if isinstance(node, Condition):
            return self.condition(node, table)
        if isinstance(node, RelationFilter):
            target = self.registry[node.relation.target]
            alias = self.tables[target.table].alias()
            return sa.exists().where(
                alias.c.id == table.c[node.relation.field],
                scope_predicate(target, alias, self.account_id),
                self.node(node.node, target, alias),
            )
        child = self.registry[node.relation.target]
        alias = self.tables[child.table].alias()
        found = sa.exists().where(
            alias.c[node.relation.field] == table.c.id,
            scope_predicate(child, alias, self.account_id),
            self.node(node.node, child, alias),
        )
        return found if isinstance(node, Some) else sa.not_(found)

    def condition(self, cond: Condition, table: sa.FromClause) -> Predicate:
        field, op, value = cond.field, cond.op, cond.value
        column = table.c[field.column]
        if op == "_is_null":
            return column.is_(None) if value else column.is_not(None)
        if field.kind == "reference":
            expr = self.reference(cond, column)
        elif field.kind in TEXT_KINDS:
            expr = self.text(op, value, column)
        elif field.kind == "integer" and self.dialect != "sqlite":
            expr = self.integer(op, value, column)
        else:
            expr = self.plain(op, value, column)
        # Two-valued: a NULL never matches a comparison, and NOT of it then matches.
        return sa.and_(column.is_not(None), expr) if field.nullable else expr

    def plain(self, op: str, value: Any, column: Any) -> Predicate:
        if op == "_between":
            return column.between(self.value(value[0]), self.value(value[1]))  # type: ignore[no-any-return]
        if op not in ("_in", "_nin"):
            value = self.value(value)
        if op == "_eq":
            return column == value  # type: ignore[no-any-return]  # Column operators are untyped
        if op == "_neq":
            return column != value  # type: ignore[no-any-return]
        if op == "_gt":
            return column > value  # type: ignore[no-any-return]
        if op == "_gte":
            return column >= value  # type: ignore[no-any-return]
        if op == "_lt":
            return column < value  # type: ignore[no-any-return]
        if op == "_lte":
            return column <= value  # type: ignore[no-any-return]
        if op == "_in":
            return column.in_(value)  # type: ignore[no-any-return]
        if op == "_nin":
            return column.not_in(value)  # type: ignore[no-any-return]
        raise ValueError(f"operator {op} cannot be compiled for this field")

    def integer(self, op: str, value: Any, column: Any) -> Predicate:
        folded = fold_integer(op, value, _int_bounds(column))
        if isinstance(folded, Constant):
            return sa.true() if folded.matches else sa.false()
        return self.plain(op, folded, column)

    def binary(self, column: Any) -> Any:
        return column.collate(MARIADB_BINARY) if self.dialect == "mysql" else column

    def ordered(self, column: Any) -> Any:
        collation = ORDER_COLLATION.get(self.dialect)
        return column.collate(collation) if collation else column

    def text(self, op: str, value: Any, column: Any) -> Predicate:
        if op in ("_eq", "_in") and self.dialect == "mysql":
            # The plain comparison (case-insensitive, index-friendly) narrows; the binary
            # one decides. Equal code points are equal under any collation. In slot mode
            # both compare with the one parameter.
            if op == "_eq":
                value = self.value(value)
            return sa.and_(
                self.plain(op, value, column), self.plain(op, value, self.binary(column))
            )
        if op in ("_eq", "_neq", "_in", "_nin"):
            return self.plain(op, value, self.binary(column))
        if op in ("_gt", "_gte", "_lt", "_lte", "_between"):
            return self.plain(op, value, self.ordered(column))
        pattern = text_pattern(op, value, self.dialect)
        if op in ("_ilike", "_icontains"):
            lowered = self.binary(sa.func.lower(column))
            bound = self.value(pattern, sa.String())
            return lowered.like(sa.func.lower(bound), escape=LIKE_ESCAPE)  # type: ignore[no-any-return]
        if self.dialect == "sqlite":  # SQLite's LIKE ignores ASCII case; GLOB does not
            glob = column.op("GLOB", is_comparison=True)(self.value(pattern))
            return glob  # type: ignore[no-any-return]
        return self.binary(column).like(self.value(pattern), escape=LIKE_ESCAPE)  # type: ignore[no-any-return]

    def reference(self, cond: Condition, column: Any) -> Predicate:
        target = self.registry[cond.field.references or ""]
        alias = self.tables[target.table].alias()
        ids = alias.c.id_random
        values = cond.value if cond.op in ("_in", "_nin") else (cond.value,)
        match = self.text("_in", values, ids)
        resolved = sa.select(alias.c.id).where(
            match, scope_predicate(target, alias, self.account_id)
        )
        found = column.in_(resolved)
        return found if cond.op in ("_eq", "_in") else sa.not_(found)  # type: ignore[no-any-return]


def compile_filter(
    node: FilterNode,
    obj: ObjectType,
    registry: Registry,
    tables: Mapping[str, sa.Table],
    *,
    account_id: int | None,
    dialect: str,
    table: sa.FromClause | None = None,
    slots: list[Any] | None = None,
) -> Predicate:
    """The WHERE clause for `node` on `obj`'s table (or `table`, an alias of it).

    Relation subqueries are scoped to `account_id` (None for a system principal); the
    top-level table is not: AND `scope_predicate(obj, table, account_id)` to it yourself.
    With `slots` (an empty list), every value is the bind parameter `:v<n>` instead and is
    appended to `slots`: the clause then serves every filter of its `filter_shape`.
    """
    compiler = _Compiler(registry, tables, account_id, dialect, slots)
    return compiler.node(node, obj, tables[obj.table] if table is None else table)


class _NotShaped(Exception):
    pass


def filter_shape(
    node: FilterNode, table: sa.Table, *, dialect: str
) -> tuple[tuple[Any, ...], list[Any]] | None:
    """The structure of `node`'s WHERE clause on `table`, and the values that clause binds in
    the order `compile_filter(..., slots=[])` binds them (`:v0`, `:v1`…), without building
    it: two filters of one shape share one statement. None when the structure depends on
    more than this walk sees (relations, lists, a NULL value): compile such a filter per
    request. Every decision `_Compiler` makes on a value is made here by the same helper
    (`fold_integer`, `text_pattern`); the caller checks the two lists agree the first time.
    """
    name = normalise_dialect(dialect)
    values: list[Any] = []

    def walk(node: FilterNode) -> tuple[Any, ...]:
        if isinstance(node, And | Or):
            return (type(node).__name__, tuple(walk(c) for c in node.children))
        if isinstance(node, Not):
            return ("Not", walk(node.child))
        if not isinstance(node, Condition):
            raise _NotShaped
        field, op, value = node.field, node.op, node.value
        if op == "_is_null":
            return (field.name, op, bool(value))
        if field.kind == "reference" or op in ("_in", "_nin") or value is None:
            raise _NotShaped
        if op == "_between" and None in value:
            raise _NotShaped
        if field.kind in TEXT_KINDS:
            if op == "_between":
                values.extend(value)
            elif op in _COMPARE:
                values.append(value)
            else:
                values.append(text_pattern(op, value, name))
            return (field.name, op)
        if field.kind == "integer" and name != "sqlite":
            value = fold_integer(op, value, _int_bounds(table.c[field.column]))
            if isinstance(value, Constant):
                return (field.name, op, value.matches)
        values.extend(value if op == "_between" else (value,))
        return (field.name, op)

    try:
        return walk(node), values
    except _NotShaped:
        return None


# -- ordering and keyset pagination --------------------------------------------------------


class OrderColumn(NamedTuple):
    """One ORDER BY key: select `column.label(label)` to read the row's cursor value.

    NULL sorts as the smallest value on every database (first ascending, last descending).
    """

    label: str
    column: Any
    descending: bool
    nullable: bool


TIE_BREAKER = "_k_id"


def compile_order(
    sort: tuple[SortKey, ...], obj: ObjectType, table: sa.FromClause, *, dialect: str
) -> list[OrderColumn]:
    """The sort keys as columns (text under the dialect's code-point collation, the same one
    `keyset_predicate` compares with), then the internal `id` as the tie-breaker, in the
    direction of the last key so that one index on `(account_id, key)` serves the whole
    ORDER BY, forwards or backwards (InnoDB and PostgreSQL indexes end with the key)."""
    name = normalise_dialect(dialect)
    collation = ORDER_COLLATION.get(name)
    order = []
    for i, key in enumerate(sort):
        column: Any = table.c[key.field.column]
        if collation and key.field.kind in TEXT_KINDS:
            column = column.collate(collation)
        order.append(OrderColumn(f"_k{i}", column, key.descending, key.field.nullable))
    last_descending = sort[-1].descending if sort else False
    order.append(OrderColumn(TIE_BREAKER, table.c.id, last_descending, False))
    return order


def order_by_clauses(order: list[OrderColumn], *, dialect: str) -> list[Any]:
    """ORDER BY clauses for `order`. SQLite and MariaDB already put NULL first ascending;
    PostgreSQL is told to (MariaDB has no NULLS FIRST syntax)."""
    name = normalise_dialect(dialect)
    clauses = []
    for oc in order:
        clause = oc.column.desc() if oc.descending else oc.column.asc()
        if name == "postgresql" and oc.nullable:
            clause = clause.nulls_last() if oc.descending else clause.nulls_first()
        clauses.append(clause)
    return clauses


def cursor_values(order: list[OrderColumn], row: Mapping[str, Any]) -> list[Any]:
    """The cursor values of a result row that selected every `OrderColumn` by its label."""
    return [row[oc.label] for oc in order]


def _after_key(oc: OrderColumn, value: Any) -> Predicate:
    column = oc.column
    if value is None:  # NULL is the smallest value
        return sa.false() if oc.descending else column.is_not(None)
    if oc.descending:
        smaller = column < value
        return sa.or_(column.is_(None), smaller) if oc.nullable else smaller
    return column > value  # type: ignore[no-any-return]


def _same_key(oc: OrderColumn, value: Any) -> Predicate:
    return oc.column.is_(None) if value is None else oc.column == value  # type: ignore[no-any-return]


def keyset_predicate(order: list[OrderColumn], values: list[Any]) -> Predicate:
    """Rows strictly after the position `values` (one per `OrderColumn`) in `order`.

    A cursor whose length does not fit `order` is a 400 (it cannot come from this query).
    """
    if len(values) != len(order):
        raise BadRequestError("invalid cursor: it does not belong to this query")
    branches = []
    for i, oc in enumerate(order):
        equal = [_same_key(o, v) for o, v in zip(order[:i], values[:i], strict=True)]
        branches.append(sa.and_(*equal, _after_key(oc, values[i])))
    return sa.or_(*branches)
