"""Read plans: the Core statements that read each object type, built once at start-up.

A plan selects every readable field under its public name: `id_random` as `id`, each
foreign key as the referenced row's public id (one LEFT JOIN per reference), plus the
internal key and version under private labels. Tenant scoping is added by `scoped()` to
every statement; there is no way to get a statement from a plan without it.

The statements of the hot paths (one object by id, under any chain of ancestors) are built
once with bind parameters (`:acct`, `:pid`, `:anc0`...), so a request only binds values:
the ancestor chain is checked inside the same statement, never by a statement of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa

from registry.descriptors import FieldInfo, ObjectType, Registry

PK_LABEL = "_pk"
VERSION_LABEL = "_version"
ACCOUNT_PARAM = "acct"
ID_PARAM = "pid"
ROW_PK_PARAM, ROW_VERSION_PARAM = "row_pk", "row_version"
#: Struct types kept per object type for `ReadPlan.record` (one per set of names asked for).
MAX_RECORD_SHAPES = 64


def row_params(pk: int, version: int, account_id: int | None) -> dict[str, Any]:
    """The bound values of `ReadPlan.update` / `ReadPlan.delete` for one row."""
    params: dict[str, Any] = {ROW_PK_PARAM: pk, ROW_VERSION_PARAM: version}
    if account_id is not None:
        params[ACCOUNT_PARAM] = account_id
    return params


def ancestor_param(depth: int) -> str:
    return f"anc{depth}"


def account_column(obj: ObjectType, table: sa.FromClause) -> sa.ColumnElement[Any]:
    """The column that says which account a row of `obj` (in `table`, or an alias of it)
    belongs to: `account_id`, or the account's own key."""
    column: sa.ColumnElement[Any] = table.c.id if obj.name == "account" else table.c.account_id
    return column


def ancestor_key(
    ancestors: tuple[ObjectType, ...], tables: Mapping[str, sa.Table], *, scoped: bool
) -> sa.ScalarSelect[Any]:
    """The internal key of the last of `ancestors`, found by their public ids (`:anc0`...)
    along the parent chain, each inside the account `:acct` when `scoped`."""
    aliases = [tables[a.table].alias(f"anc{i}") for i, a in enumerate(ancestors)]
    conditions: list[sa.ColumnElement[bool]] = []
    for i, (step, alias) in enumerate(zip(ancestors, aliases, strict=True)):
        conditions.append(alias.c.id_random == sa.bindparam(ancestor_param(i)))
        if scoped:
            conditions.append(account_column(step, alias) == sa.bindparam(ACCOUNT_PARAM))
        if i > 0:
            assert step.parent is not None
            conditions.append(alias.c[step.parent.field] == aliases[i - 1].c.id)
    return sa.select(aliases[-1].c.id).where(*conditions).scalar_subquery()


class ReadPlan:
    """How to read one object type."""

    def __init__(self, obj: ObjectType, registry: Registry, tables: Mapping[str, sa.Table]) -> None:
        self.obj = obj
        self.table = tables[obj.table]
        self.readable: tuple[FieldInfo, ...] = tuple(f for f in obj.fields if f.is_readable)
        source: sa.FromClause = self.table
        scoped_source: sa.FromClause = self.table
        columns: dict[str, sa.ColumnElement[Any]] = {}
        scoped_columns: dict[str, sa.ColumnElement[Any]] = {}
        #: The reference to the owning account: inside one account its value is that
        #: account's public id, so scoped statements select no join for it (`public()`).
        self.account_field: str | None = None
        for field in self.readable:
            if field.kind == "reference" and field.references:
                target = tables[registry[field.references].table].alias(f"ref_{field.column}")
                join = target.c.id == self.table.c[field.column]
                source = source.outerjoin(target, join)
                columns[field.name] = target.c.id_random.label(field.name)
                if field.references == "account" and field.column == "account_id":
                    self.account_field = field.name
                    scoped_columns[field.name] = sa.null().label(field.name)
                else:
                    scoped_source = scoped_source.outerjoin(target, join)
                    scoped_columns[field.name] = columns[field.name]
            else:
                columns[field.name] = self.table.c[field.column].label(field.name)
                scoped_columns[field.name] = columns[field.name]
        self.source = source
        self.columns = columns
        self._scoped_source = scoped_source
        self._scoped_columns = scoped_columns
        self.names: tuple[str, ...] = tuple(columns)
        #: Positions of a whole object's columns in its rows (what the direct reader may give
        #: in JSON form when the object is only encoded).
        self.encoded = frozenset(range(len(self.names)))
        self.pk = self.table.c.id
        self.tables = tables
        self._select_all = self._build_select(self.columns.values())
        self._select_scoped = self._build_select(self._scoped_columns.values(), in_account=True)
        self._items: dict[tuple[tuple[str, ...], bool], sa.Select[Any]] = {}
        self._records: dict[tuple[str, ...], type[msgspec.Struct]] = {}
        #: List and search pages without a filter, by shape (see `listing.page_statement`).
        self.pages: dict[Any, tuple[sa.Select[Any], list[sa.ColumnElement[bool]]]] = {}
        #: What an INSERT returns: every readable column that is not a reference (those
        #: are public ids of other rows, known to the writer), then key and version.
        self.returning: tuple[sa.ColumnElement[Any], ...] = (
            *(self.table.c[f.column].label(f.name) for f in self.readable if f.kind != "reference"),
            self.pk.label(PK_LABEL),
            self.table.c.version.label(VERSION_LABEL),
        )
        #: The INSERT, built once: the row's values are execution parameters, so a create
        #: builds no SQL expression (SQLAlchemy compiles it once per set of columns given).
        self.insert = self.table.insert().returning(*self.returning)
        #: UPDATE and DELETE of one row under the version that was read, built once per scope
        #: (inside an account or not): key, version and account are bound (`row_params`),
        #: an update's new values are execution parameters.
        self.update = {
            s: self.table.update().where(*self._row_at_version(s)) for s in (True, False)
        }
        self.delete = {
            s: self.table.delete().where(*self._row_at_version(s)) for s in (True, False)
        }
        for chain in ancestor_chains(obj, registry):
            for scoped in (True, False):
                self.item(chain, scoped=scoped)

    def select(
        self, fields: Iterable[str] | None = None, *, in_account: bool = False
    ) -> sa.Select[Any]:
        """SELECT of the readable fields (or only `fields`, `id` always), unscoped.

        `in_account=True`, for statements that will carry the account predicate, leaves the
        owning account's public id out (NULL): `public()` fills it in.
        """
        if fields is None:
            return self._select_scoped if in_account else self._select_all
        names = self.names_for(fields)
        columns = self._scoped_columns if in_account else self.columns
        return self._build_select((columns[name] for name in names), in_account=in_account)

    def names_for(self, fields: Iterable[str] | None) -> tuple[str, ...]:
        """The public names `select(fields)` reads, in order: every readable one, or `id`
        then `fields`."""
        if fields is None:
            return self.names
        return ("id", *(f for f in fields if f != "id"))

    def _build_select(
        self, cols: Iterable[sa.ColumnElement[Any]], *, in_account: bool = False
    ) -> sa.Select[Any]:
        return sa.select(
            *cols,
            self.pk.label(PK_LABEL),
            self.table.c.version.label(VERSION_LABEL),
        ).select_from(self._scoped_source if in_account else self.source)

    def tenant_predicate(self, account_id: int | None) -> sa.ColumnElement[bool]:
        """The account predicate every statement on this type carries (`true` for system)."""
        if account_id is None:
            return sa.true()
        return account_column(self.obj, self.table) == account_id

    def scoped(self, stmt: sa.Select[Any], account_id: int | None) -> sa.Select[Any]:
        return stmt.where(self.tenant_predicate(account_id))

    def _row_at_version(self, scoped: bool) -> tuple[sa.ColumnElement[bool], ...]:
        return (
            self.pk == sa.bindparam(ROW_PK_PARAM),
            self.table.c.version == sa.bindparam(ROW_VERSION_PARAM),
            self.account_param() if scoped else sa.true(),
        )

    def account_param(self) -> sa.ColumnElement[bool]:
        """The account predicate with the account as the bind parameter `:acct`."""
        return account_column(self.obj, self.table) == sa.bindparam(ACCOUNT_PARAM)

    def under(self, ancestors: tuple[ObjectType, ...], *, scoped: bool) -> sa.ColumnElement[bool]:
        """Rows whose parent is the last of `ancestors` (bound as `:anc0`...), or `true`."""
        parent = self.obj.parent
        if not ancestors or parent is None:
            return sa.true()
        return self.table.c[parent.field] == ancestor_key(ancestors, self.tables, scoped=scoped)

    def item(
        self,
        ancestors: tuple[ObjectType, ...],
        *,
        scoped: bool = True,
        fields: Iterable[str] | None = None,
    ) -> sa.Select[Any]:
        """SELECT of the object `:pid` under `ancestors`, in account `:acct` when `scoped`.

        Built once per ancestor chain (at start-up), or per request when `fields` narrows it.
        """
        key = (tuple(a.name for a in ancestors), scoped)
        if fields is None and key in self._items:
            return self._items[key]
        stmt = self.select(fields, in_account=scoped).where(
            self.table.c.id_random == sa.bindparam(ID_PARAM),
            self.under(ancestors, scoped=scoped),
        )
        if scoped:
            stmt = stmt.where(self.account_param())
        if fields is None:
            self._items[key] = stmt
        return stmt

    def public(
        self,
        row: Sequence[Any],
        names: Sequence[str] | None = None,
        account_public_id: str | None = None,
    ) -> dict[str, Any]:
        """The public part of a row selected by `select()` (the first `len(names)` columns),
        with the owning account's public id when the statement was `in_account`."""
        item = dict(zip(names or self.names, row, strict=False))
        if account_public_id is not None and self.account_field in item:
            item[self.account_field] = account_public_id
        return item

    def record(
        self,
        row: Sequence[Any],
        names: tuple[str, ...] | None = None,
        account_public_id: str | None = None,
    ) -> msgspec.Struct | dict[str, Any]:
        """`public()` as a msgspec Struct of the row's own shape (one type per set of names):
        several times cheaper to build and to encode than a dict, for answers that are only
        encoded (a hot read's object, a page's items)."""
        names = names or self.names
        kind = self._records.get(names)
        if kind is None:
            if len(self._records) >= MAX_RECORD_SHAPES:  # `fields` choices are the client's
                return self.public(row, names, account_public_id)
            kind = msgspec.defstruct(f"{self.obj.name}_record", [(n, Any) for n in names])
            self._records[names] = kind
        item = kind(*row[: len(names)])
        if account_public_id is not None and self.account_field in names:
            setattr(item, self.account_field, account_public_id)
        return item


def ancestor_chains(obj: ObjectType, registry: Registry) -> list[tuple[ObjectType, ...]]:
    """Every ancestor tuple a URL can name before `obj`: suffixes of its parent chain."""
    chain: list[ObjectType] = []
    current = obj
    while current.parent is not None and len(chain) < len(registry):
        current = registry[current.parent.target]
        chain.insert(0, current)
    return [tuple(chain[i:]) for i in range(len(chain) + 1)]


def build_plans(registry: Registry, tables: Mapping[str, sa.Table]) -> dict[str, ReadPlan]:
    return {obj.name: ReadPlan(obj, registry, tables) for obj in registry}
