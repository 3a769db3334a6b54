"""Walk SQLAlchemy metadata and build the `Registry` of object types.

Pure: it reads table and column definitions (and the mapped classes' `__aether__` options)
and never connects. A model the engine cannot serve safely raises `RegistryError` naming
the model and the rule it breaks, so a bad model fails at boot, not at the first request.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from models.base import COLUMN_FLAGS, ModelOptions
from registry.descriptors import (
    RESERVED_NAMES,
    ROLE_ORDER,
    FieldInfo,
    FieldKind,
    ObjectType,
    Permissions,
    Registry,
    Relation,
)

#: Columns the engine owns: never written by a client.
SERVER_COLUMNS = frozenset({"id", "id_random", "account_id", "created_at", "updated_at", "version"})
TENANT_TABLE = "account"


def to_plain_str(name: str) -> str:
    """`name` as an exact `str`.

    SQLAlchemy names tables and Core columns with `quoted_name`, a `str` subclass msgspec
    refuses to encode; every name the registry takes from metadata goes through here.
    """
    return str.__str__(name)


class RegistryError(Exception):
    """A model that cannot be served safely; the message names the model and the rule."""


def _import(path: str) -> ModuleType:
    try:
        return importlib.import_module(path)
    except ImportError as exc:
        raise RegistryError(f"model module {path!r} cannot be imported: {exc}") from exc


def load_models(module_paths: Iterable[str]) -> None:
    """Import every module in `module_paths` so their classes join the shared metadata.

    A package is imported with every module under it, found on disk (subpackages too): a
    model module dropped into `models/` is served without being listed anywhere.
    """
    for path in module_paths:
        module = _import(path)
        package_path = getattr(module, "__path__", None)
        if package_path is None:
            continue

        def failed(name: str) -> None:
            _import(name)  # re-raises the subpackage's error as a RegistryError

        for info in pkgutil.walk_packages(package_path, f"{module.__name__}.", onerror=failed):
            _import(info.name)


def introspect(base: type[DeclarativeBase]) -> Registry:
    """Build the registry from every mapped class on `base`."""
    return _Introspector(base).build()


class _Introspector:
    def __init__(self, base: type[DeclarativeBase]) -> None:
        self.metadata = base.metadata
        self.options: dict[str, ModelOptions] = {}
        for mapper in base.registry.mappers:
            table = mapper.local_table
            if isinstance(table, sa.Table):
                options = getattr(mapper.class_, "__aether__", ModelOptions())
                self.options[to_plain_str(table.name)] = options

    def build(self) -> Registry:
        tables = [t for t in self.metadata.sorted_tables if t.name in self.options]
        parents = {to_plain_str(t.name): self._parent_column(t) for t in tables}
        types: dict[str, ObjectType] = {}
        for table in tables:
            types[to_plain_str(table.name)] = self._object_type(table, parents)
        self._check_cycles(types)
        ordered = sorted(types.values(), key=lambda o: (self._depth(o, types), o.name))
        return Registry(types={o.name: o for o in ordered})

    # -- checks -----------------------------------------------------------------------

    def _fail(self, table: sa.Table, rule: str) -> RegistryError:
        return RegistryError(f"model {table.name!r} cannot be served: {rule}")

    def _parent_column(self, table: sa.Table) -> sa.Column[Any] | None:
        marked = [c for c in table.columns if c.info.get("parent")]
        if len(marked) > 1:
            names = ", ".join(c.name for c in marked)
            raise self._fail(table, f"two parents declared ({names}); a type has one parent")
        if marked:
            col = marked[0]
            if len(col.foreign_keys) != 1:
                raise self._fail(table, f"parent column {col.name!r} is not a foreign key")
            return col
        if self._is_tenant_owned(table) and table.name != TENANT_TABLE:
            if "account_id" not in table.columns:
                raise self._fail(table, "a tenant-owned table without account_id (use TenantMixin)")
            return table.columns["account_id"]
        return None

    def _is_tenant_owned(self, table: sa.Table) -> bool:
        return self.options[table.name].tenant_owned

    def _check_table(self, table: sa.Table) -> None:
        name = table.name
        if name in RESERVED_NAMES:
            raise self._fail(table, f"the name collides with the reserved path segment {name!r}")
        if not name.isidentifier() or name.lower() != name:
            raise self._fail(table, "type names are lower-case identifiers")
        if "id_random" not in table.columns:
            raise self._fail(table, "no id_random column (use PublicIdMixin)")
        pk = list(table.primary_key.columns)
        if [c.name for c in pk] != ["id"]:
            raise self._fail(table, "the primary key must be the single integer column 'id'")
        if not self._is_tenant_owned(table) and name != TENANT_TABLE:
            raise self._fail(
                table,
                f"tenant_owned=False is reserved for {TENANT_TABLE!r} itself; every other type "
                "belongs to one account (drop the option and use TenantMixin)",
            )
        if self._is_tenant_owned(table) and "account_id" not in table.columns:
            raise self._fail(table, "a tenant-owned table without account_id (use TenantMixin)")
        opts = self.options[name]
        for role in (opts.read_role, opts.write_role):
            if role not in ROLE_ORDER:
                raise self._fail(table, f"unknown role {role!r}")
        for col in table.columns:
            unknown = set(col.info) - COLUMN_FLAGS
            if unknown:
                raise self._fail(
                    table, f"column {col.name!r} has unknown info keys {sorted(unknown)}"
                )

    def _check_cycles(self, types: dict[str, ObjectType]) -> None:
        for obj in types.values():
            seen = {obj.name}
            cur = obj
            while cur.parent is not None:
                if cur.parent.target in seen:
                    raise RegistryError(
                        f"model {obj.name!r} cannot be served: a cycle of parents "
                        f"through {cur.parent.target!r}"
                    )
                seen.add(cur.parent.target)
                nxt = types.get(cur.parent.target)
                if nxt is None:
                    raise RegistryError(
                        f"model {obj.name!r} cannot be served: its parent "
                        f"{cur.parent.target!r} is not a served type"
                    )
                cur = nxt

    def _depth(self, obj: ObjectType, types: dict[str, ObjectType]) -> int:
        depth = 0
        while obj.parent is not None and depth < len(types):
            obj = types[obj.parent.target]
            depth += 1
        return depth

    # -- building ---------------------------------------------------------------------

    def _object_type(
        self, table: sa.Table, parents: dict[str, sa.Column[Any] | None]
    ) -> ObjectType:
        self._check_table(table)
        opts = self.options[table.name]
        parent_col = parents[table.name]
        parent: Relation | None = None
        references: list[Relation] = []
        fields: list[FieldInfo] = []
        for col in table.columns:
            if col.info.get("hidden") or col.name == "id":
                continue
            if col.name == "account_id" and parent_col is not col:
                continue
            info = self._field(table, col, opts)
            fields.append(info)
            if info.kind == "reference" and info.references:
                (fk,) = col.foreign_keys
                on_delete = (fk.ondelete or "RESTRICT").upper()
                if col is parent_col:
                    parent = Relation(
                        name=info.references,
                        kind="parent",
                        target=info.references,
                        field=to_plain_str(col.name),
                        on_delete=on_delete,
                    )
                else:
                    references.append(
                        Relation(
                            name=to_plain_str(col.name).removesuffix("_id"),
                            kind="reference",
                            target=info.references,
                            field=to_plain_str(col.name),
                            on_delete=on_delete,
                        )
                    )
        fields.sort(key=lambda f: f.name != "id")
        children = tuple(self._children(table, parents))
        names = {f.name for f in fields}
        for rel in (*references, *children):
            if rel.name in names and rel.kind != "child":
                raise self._fail(table, f"relation {rel.name!r} collides with a field")
        default_sort = tuple(opts.default_sort)
        for key in default_sort:
            if key.lstrip("-") not in names:
                raise self._fail(table, f"default sort on unknown field {key!r}")
        return ObjectType(
            name=to_plain_str(table.name),
            table=to_plain_str(table.name),
            title=opts.title or to_plain_str(table.name).replace("_", " ").capitalize(),
            description=opts.description,
            tenant_owned=opts.tenant_owned,
            fields=tuple(fields),
            parent=parent,
            children=children,
            references=tuple(references),
            permissions=Permissions(
                read_role=opts.read_role,
                write_role=opts.write_role,
                create=opts.create,
                update=opts.update,
                delete=opts.delete,
            ),
            default_sort=default_sort,
            validator=opts.validator,
        )

    def _children(
        self, table: sa.Table, parents: dict[str, sa.Column[Any] | None]
    ) -> Iterable[Relation]:
        for child_name, col in parents.items():
            if col is None:
                continue
            (fk,) = col.foreign_keys
            if fk.column.table is table:
                yield Relation(
                    name=to_plain_str(child_name),
                    kind="child",
                    target=to_plain_str(child_name),
                    field=to_plain_str(col.name),
                    on_delete=(fk.ondelete or "RESTRICT").upper(),
                )

    def _field(self, table: sa.Table, col: sa.Column[Any], opts: ModelOptions) -> FieldInfo:
        info = col.info
        if col.name == "id_random":
            return FieldInfo(
                name="id",
                column="id_random",
                kind="id",
                nullable=False,
                read_only=True,
                sortable=True,
                max_length=22,
                title="Id",
            )
        kind, extra = self._kind(table, col)
        server = col.name in SERVER_COLUMNS or bool(info.get("server_set"))
        read_only = bool(info.get("read_only")) or server
        default = info.get("default", msgspec.UNSET)
        if default is msgspec.UNSET and isinstance(col.default, ScalarElementColumnDefault):
            default = col.default.arg
        required = (
            not col.nullable
            and not read_only
            and default is msgspec.UNSET
            and not info.get("write_only")
        )
        max_length = info.get("max_length")
        if max_length is None and isinstance(col.type, sa.String) and kind in ("string",):
            max_length = col.type.length
        enum = info.get("enum")
        return FieldInfo(
            name=to_plain_str(info.get("public_name", col.name)),
            column=to_plain_str(col.name),
            kind=kind,
            nullable=bool(col.nullable) if not info.get("write_only") else True,
            required=required,
            read_only=read_only,
            write_only=bool(info.get("write_only")),
            write_once=bool(info.get("write_once")),
            searchable=bool(info.get("searchable", True)) and not info.get("write_only"),
            sortable=bool(info.get("sortable")) and not info.get("write_only"),
            max_length=max_length,
            min_length=info.get("min_length"),
            pattern=info.get("pattern"),
            enum=tuple(enum) if enum else None,
            minimum=info.get("minimum"),
            maximum=info.get("maximum"),
            exclusive_minimum=info.get("exclusive_minimum"),
            default=default,
            format=info.get("format") or extra.get("format"),
            title=info.get("title"),
            description=info.get("description"),
            examples=tuple(info["examples"]) if info.get("examples") else None,
            items=info.get("items"),
            json_schema=info.get("json_schema"),
            references=extra.get("references"),
            transform=info.get("transform"),
        )

    def _kind(self, table: sa.Table, col: sa.Column[Any]) -> tuple[FieldKind, dict[str, Any]]:
        if col.foreign_keys:
            (fk,) = col.foreign_keys
            target = fk.column.table
            if fk.column.name != "id" or target.name not in self.options:
                raise self._fail(
                    table, f"foreign key {col.name!r} must reference a served type's id"
                )
            return "reference", {"references": to_plain_str(target.name)}
        if col.info.get("enum"):
            return "enum", {}
        t = col.type
        if isinstance(t, sa.types.TypeDecorator):
            t = t.impl_instance
        if isinstance(t, sa.Boolean):
            return "boolean", {}
        if isinstance(t, sa.Integer):
            return "integer", {}
        if isinstance(t, sa.Float):
            return "number", {}
        if isinstance(t, sa.Numeric):
            return "decimal", {}
        if isinstance(t, sa.DateTime):
            return "datetime", {"format": "date-time"}
        if isinstance(t, sa.Date):
            return "date", {"format": "date"}
        if isinstance(t, sa.JSON):
            return ("array" if col.info.get("json_type") == "array" else "object"), {}
        if isinstance(t, sa.String):
            return "string", {}
        raise self._fail(table, f"column {col.name!r} has a type the engine cannot serve ({t!r})")
