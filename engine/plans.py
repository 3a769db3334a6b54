"""Read plans: the Core statements that read each object type, built once at start-up.

A plan selects every readable field under its public name: `id_random` as `id`, each
foreign key as the referenced row's public id (one LEFT JOIN per reference), plus the
internal key and version under private labels. Tenant scoping is added by `scoped()` to
every statement; there is no way to get a statement from a plan without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from registry.descriptors import FieldInfo, ObjectType, Registry

PK_LABEL = "_pk"
VERSION_LABEL = "_version"


class ReadPlan:
    """How to read one object type."""

    def __init__(self, obj: ObjectType, registry: Registry, tables: Mapping[str, sa.Table]) -> None:
        self.obj = obj
        self.table = tables[obj.table]
        self.readable: tuple[FieldInfo, ...] = tuple(f for f in obj.fields if f.is_readable)
        source: sa.FromClause = self.table
        columns: dict[str, sa.ColumnElement[Any]] = {}
        for field in self.readable:
            if field.kind == "reference" and field.references:
                target = tables[registry[field.references].table].alias(f"ref_{field.column}")
                source = source.outerjoin(target, target.c.id == self.table.c[field.column])
                columns[field.name] = target.c.id_random.label(field.name)
            else:
                columns[field.name] = self.table.c[field.column].label(field.name)
        self.source = source
        self.columns = columns
        self.pk = self.table.c.id
        self.is_account = obj.name == "account"
        self._select_all = self._build_select(self.columns.values())

    def select(self, fields: Iterable[str] | None = None) -> sa.Select[Any]:
        """SELECT of the readable fields (or only `fields`, `id` always), unscoped."""
        if fields is None:
            return self._select_all
        names = ["id", *(f for f in fields if f != "id")]
        return self._build_select(self.columns[name] for name in names)

    def _build_select(self, cols: Iterable[sa.ColumnElement[Any]]) -> sa.Select[Any]:
        return sa.select(
            *cols,
            self.pk.label(PK_LABEL),
            self.table.c.version.label(VERSION_LABEL),
        ).select_from(self.source)

    def tenant_predicate(self, account_id: int | None) -> sa.ColumnElement[bool]:
        """The account predicate every statement on this type carries (`true` for system)."""
        if account_id is None:
            return sa.true()
        if self.is_account:
            return self.table.c.id == account_id
        return self.table.c.account_id == account_id

    def scoped(self, stmt: sa.Select[Any], account_id: int | None) -> sa.Select[Any]:
        return stmt.where(self.tenant_predicate(account_id))


def build_plans(registry: Registry, tables: Mapping[str, sa.Table]) -> dict[str, ReadPlan]:
    return {obj.name: ReadPlan(obj, registry, tables) for obj in registry}
