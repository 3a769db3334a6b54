"""Does every statement the engine sends keep to one account? A checker for the test suite.

`unscoped(sql, dialect, tenant_tables)` parses one statement (sqlglot) and names every
occurrence of a tenant table (a table with an `account_id` column, and `account` itself)
that a SELECT, UPDATE or DELETE reaches without being constrained to an account. INSERTs
are not checked: the engine sets `account_id` on every row it writes.

An occurrence `t` (a FROM, JOIN, UPDATE or DELETE target, under its alias) is *scoped* when
a conjunct of its own query level (the WHERE clause, a JOIN's ON clause; never under an OR
or a NOT) is one of:

- `t.account_id = x` or `t.account_id IN (...)` or `t.account_id IS NULL`, where `x` is a
  bound value, a literal, or the `account_id` of a scoped occurrence (an equi-join on the
  account);
  for the `account` table, the same with its `id`;
- `t.id = s.col` (or `t.id IN (SELECT s.col ...)`) where `s` is scoped: `t` is the row a
  scoped row refers to (a to-one reference, as a LEFT JOIN to a referenced row is). The
  engine resolves every reference inside the account on write, so such a row belongs to the
  same account;
- `t.account_id IN (SELECT ...)` or `t.col IN (SELECT ...)` of a subquery whose own tables
  are all scoped, when `col` is `account_id` or `id`.

A query level with a conjunct that is false whatever the row (`WHERE false`, `WHERE 0 = 1`,
as SQLAlchemy writes `sa.false()`) reads nothing, so its tables count as scoped. A scoped
occurrence of an outer query counts in a correlated subquery. A table of a
statement that cannot be parsed counts as unscoped: the guard never passes what it cannot
read.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

DIALECTS = {"sqlite": "sqlite", "mysql": "mysql", "mariadb": "mysql", "postgresql": "postgres"}

# Bind parameters in every style the drivers use (pyformat, format, numeric_dollar, qmark),
# each turned into the string literal '?', which sqlglot reads in every dialect and in any
# position (`$1::INTEGER` included) and which no constant-false test below mistakes for a
# number; `%%` is a literal percent sign.
_BINDS = re.compile(r"%\(\w+\)s|%s|\$\d+|%%")


def normalise_binds(sql: str) -> str:
    return _BINDS.sub(lambda m: "%" if m.group() == "%%" else "'?'", sql)


@dataclass(frozen=True)
class Occurrence:
    table: str
    alias: str


def _name(node: exp.Expression | None) -> str:
    return node.name.lower() if node is not None else ""


def _conjuncts(node: exp.Expression | None) -> Iterator[exp.Expression]:
    if node is None:
        return
    if isinstance(node, exp.Paren):
        yield from _conjuncts(node.this)
    elif isinstance(node, exp.And):
        yield from _conjuncts(node.left)
        yield from _conjuncts(node.right)
    else:
        yield node


def _levels(root: exp.Expression) -> Iterator[exp.Expression]:
    """Every query level: SELECT (each UNION branch is one), UPDATE and DELETE."""
    for node in root.walk():
        if isinstance(node, (exp.Select, exp.Update, exp.Delete)):
            yield node


def _level_of(node: exp.Expression) -> exp.Expression | None:
    parent = node.parent
    while parent is not None and not isinstance(parent, (exp.Select, exp.Update, exp.Delete)):
        parent = parent.parent
    return parent


def _own(level: exp.Expression, kind: type[exp.Expression]) -> list[exp.Expression]:
    """The nodes of `kind` that belong to `level` itself, not to a nested query."""
    return [n for n in level.find_all(kind) if _level_of(n) is level]


class Checker:
    def __init__(self, tenant_tables: Collection[str], account_table: str = "account") -> None:
        self.tenant_tables = {t.lower() for t in tenant_tables} | {account_table}
        self.account_table = account_table
        self._seen: dict[tuple[str, str], list[str]] = {}  # a suite sends the same SQL often

    def key_column(self, table: str) -> str:
        return "id" if table == self.account_table else "account_id"

    def unscoped(self, sql: str, dialect: str) -> list[str]:
        """The tenant tables `sql` reads, updates or deletes without an account constraint."""
        if (dialect, sql) not in self._seen:
            self._seen[dialect, sql] = self._unscoped(sql, dialect)
        return list(self._seen[dialect, sql])

    def _unscoped(self, sql: str, dialect: str) -> list[str]:
        mentioned = {
            t
            for t in self.tenant_tables
            if re.search(rf"(?<![\w.]){re.escape(t)}(?!\w)", sql, re.IGNORECASE)
        }
        if not mentioned:
            return []
        try:
            roots = [
                r
                for r in sqlglot.parse(normalise_binds(sql), read=DIALECTS.get(dialect, dialect))
                if r is not None
            ]
        except sqlglot.errors.SqlglotError as exc:
            return [f"{t} (unparsed: {exc})" for t in sorted(mentioned)]
        problems: list[str] = []
        for root in roots:
            if isinstance(root, exp.Insert) and not root.find(exp.Select):
                continue
            problems.extend(self._check_root(root))
        return problems

    # -- one statement -------------------------------------------------------------------

    def _occurrences(self, level: exp.Expression) -> list[Occurrence]:
        tables: list[exp.Table] = []
        for table in _own(level, exp.Table):
            if isinstance(level, exp.Update | exp.Delete) or table.find_ancestor(
                exp.From, exp.Join
            ):
                tables.append(table)  # type: ignore[arg-type]
        return [
            Occurrence(_name(t.this), (t.alias_or_name or t.name).lower())
            for t in tables
            if _name(t.this) in self.tenant_tables
        ]

    def _conditions(self, level: exp.Expression) -> list[exp.Expression]:
        found: list[exp.Expression] = []
        where = level.args.get("where")
        if where is not None:
            found.extend(_conjuncts(where.this))
        for join in _own(level, exp.Join):
            found.extend(_conjuncts(join.args.get("on")))
        return found

    def _check_root(self, root: exp.Expression) -> list[str]:
        levels = list(_levels(root))
        occurrences = {id(level): self._occurrences(level) for level in levels}
        conditions = {id(level): self._conditions(level) for level in levels}
        scoped: set[tuple[int, str]] = set()  # (level, alias)

        def visible_scoped(alias: str, level: exp.Expression) -> bool:
            """`alias` is scoped at `level` or at a query level it is nested in."""
            return any(
                (id(lv), alias) in scoped
                for lv in (level, *_ancestors(level))
                if id(lv) in occurrences
            )

        def single_alias(level: exp.Expression) -> str | None:
            occ = occurrences[id(level)]
            names = {_name(t.this) for t in _own(level, exp.Table)}
            return occ[0].alias if len(occ) == 1 and len(names) == 1 else None

        def column_alias(col: exp.Column, level: exp.Expression) -> str:
            return col.table.lower() if col.table else (single_alias(level) or "")

        def is_safe_value(node: exp.Expression, level: exp.Expression) -> bool:
            if isinstance(node, exp.Cast):
                return is_safe_value(node.this, level)
            if isinstance(node, (exp.Placeholder, exp.Literal, exp.Parameter, exp.Null)):
                return True
            if isinstance(node, exp.Column):
                return is_scoped_key(node, level)
            return False

        def is_scoped_key(col: exp.Column, level: exp.Expression) -> bool:
            """`col` is the account key of a scoped occurrence (an equi-join on the account)."""
            alias = column_alias(col, level)
            return any(
                occ.alias == alias and col.name.lower() == self.key_column(occ.table)
                for lv in (level, *_ancestors(level))
                if (id(lv), alias) in scoped
                for occ in occurrences[id(lv)]
            )

        def subquery_scoped(query: exp.Expression) -> bool:
            inner = [lv for lv in levels if lv is query or query in _ancestors(lv)]
            return all(
                (id(lv), o.alias) in scoped for lv in inner for o in occurrences[id(lv)]
            ) and any(occurrences[id(lv)] for lv in inner)

        def constrains(cond: exp.Expression, occ: Occurrence, level: exp.Expression) -> bool:
            key = self.key_column(occ.table)
            pairs: list[tuple[exp.Expression, exp.Expression]] = []
            if isinstance(cond, exp.EQ):
                pairs = [(cond.left, cond.right), (cond.right, cond.left)]
            elif isinstance(cond, exp.Is) and isinstance(cond.expression, exp.Null):
                pairs = [(cond.this, cond.expression)]
            elif isinstance(cond, exp.In):
                query = cond.args.get("query")
                col = cond.this
                if not isinstance(col, exp.Column) or column_alias(col, level) != occ.alias:
                    return False
                if query is not None:
                    inner = query.this if isinstance(query, exp.Subquery) else query
                    return col.name.lower() in (key, "id") and subquery_scoped(inner)
                return col.name.lower() == key and all(
                    is_safe_value(v, level) for v in cond.expressions
                )
            for mine, other in pairs:
                if not isinstance(mine, exp.Column) or column_alias(mine, level) != occ.alias:
                    continue
                if mine.name.lower() == key and is_safe_value(other, level):
                    return True
                if (
                    mine.name.lower() == "id"
                    and isinstance(other, exp.Column)
                    and visible_scoped(column_alias(other, level), level)
                    and column_alias(other, level) != occ.alias
                ):
                    return True
            return False

        for level in levels:
            if any(_never_true(c) for c in conditions[id(level)]):
                scoped.update((id(level), occ.alias) for occ in occurrences[id(level)])
        changed = True
        while changed:
            changed = False
            for level in levels:
                for occ in occurrences[id(level)]:
                    if (id(level), occ.alias) in scoped:
                        continue
                    if any(constrains(c, occ, level) for c in conditions[id(level)]):
                        scoped.add((id(level), occ.alias))
                        changed = True
        return [
            f"{occ.table} AS {occ.alias}" if occ.alias != occ.table else occ.table
            for level in levels
            for occ in occurrences[id(level)]
            if (id(level), occ.alias) not in scoped
        ]


def _constant(node: exp.Expression) -> float | None:
    """The value of a number or boolean written in the SQL (never a bound value)."""
    if isinstance(node, exp.Boolean):
        return 1.0 if node.this else 0.0
    if isinstance(node, exp.Literal) and node.is_number:
        return float(node.this)
    return None


def _never_true(cond: exp.Expression) -> bool:
    """`false`, `0 = 1`, `false = 1`: how SQLAlchemy writes `sa.false()` per dialect."""
    if isinstance(cond, exp.Boolean):
        return not cond.this
    if isinstance(cond, exp.EQ):
        left, right = _constant(cond.left), _constant(cond.right)
        return left is not None and right is not None and left != right
    return False


def _ancestors(node: exp.Expression) -> Iterator[exp.Expression]:
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent
