"""Immutable descriptors of the object types the engine serves.

`introspect()` builds a `Registry` once at start-up from SQLAlchemy metadata; everything
downstream (generated msgspec types, JSON Schema, routes, search checks, SQL compilation)
reads these records and never reaches back into the models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import msgspec

#: The JSON shape of a field, which decides its validation, operators and schema.
FieldKind = Literal[
    "id",  # the public id (`id` over HTTP, `id_random` in SQL)
    "reference",  # a foreign key, exposed as the referenced row's public id
    "string",
    "enum",
    "integer",
    "number",
    "boolean",
    "datetime",
    "date",
    "decimal",
    "object",  # a JSON column holding an object
    "array",  # a JSON column holding an array
]

RelationKind = Literal["parent", "reference", "child"]

#: The roles a user or API key holds inside an account.
TenantRole = Literal["viewer", "editor", "admin", "owner"]
#: The tenant roles, lowest first.
TENANT_ROLES: tuple[str, ...] = get_args(TenantRole)
#: Roles lowest first; `system` acts across accounts and sits above every tenant role.
ROLE_ORDER: tuple[str, ...] = (*TENANT_ROLES, "system")

#: A public id: 22 URL-safe base64 characters (ECMA-262, as the JSON Schema says it).
PUBLIC_ID_PATTERN = "^[A-Za-z0-9_-]{22}$"
_PUBLIC_ID_RE = re.compile(PUBLIC_ID_PATTERN.removeprefix("^").removesuffix("$"))

#: Path segments that can never be type names.
RESERVED_NAMES = frozenset({"schema", "search"})


class FieldInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One public field of an object type.

    `name` is the field's name over HTTP, `column` its column in SQL (they differ for `id`,
    which is `id_random`, and for fields declared with `public_name`).
    """

    name: str
    column: str
    kind: FieldKind
    nullable: bool = True
    required: bool = False  # on create
    read_only: bool = False
    write_only: bool = False
    write_once: bool = False
    searchable: bool = True
    sortable: bool = False
    max_length: int | None = None
    min_length: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    default: Any = msgspec.UNSET  # a JSON value filled in on create when absent
    format: str | None = None
    title: str | None = None
    description: str | None = None
    examples: tuple[Any, ...] | None = None
    items: str | None = None  # arrays: the JSON type of the items
    json_schema: Mapping[str, Any] | None = None  # object/array columns: extra constraints
    references: str | None = None  # reference/parent fields: the target type's name
    transform: Callable[[Any], Any] | None = None  # applied to a written value before storing

    @property
    def is_readable(self) -> bool:
        return not self.write_only

    @property
    def is_writable(self) -> bool:
        return not self.read_only


class Relation(msgspec.Struct, frozen=True, kw_only=True):
    """An edge between two types.

    - `parent`: to-one, `field` is this type's foreign key to `target`.
    - `reference`: to-one, `field` is this type's foreign key to `target`; named `name`
      (the field without `_id`) in filters and includes.
    - `child`: to-many, `field` is the child's foreign key back to this type; named by the
      child type's name. `on_delete` is the child FK's rule (`CASCADE` or `RESTRICT`).
    """

    name: str
    kind: RelationKind
    target: str
    field: str
    on_delete: str | None = None


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    read_role: str = "viewer"
    write_role: str = "editor"
    create: bool = True
    update: bool = True
    delete: bool = True


class ObjectType(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the engine knows about one object type.

    `fields` are the public fields in declaration order (`id` first); hidden columns are not
    among them. `table` is the SQL table name, looked up in the engine's metadata.
    """

    name: str
    table: str
    title: str
    description: str | None = None
    tenant_owned: bool = True
    fields: tuple[FieldInfo, ...]
    parent: Relation | None = None
    children: tuple[Relation, ...] = ()
    references: tuple[Relation, ...] = ()
    permissions: Permissions = Permissions()
    default_sort: tuple[str, ...] = ()
    validator: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None

    def field(self, name: str) -> FieldInfo | None:
        """The public field called `name`, or None."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def relation(self, name: str) -> Relation | None:
        """A to-one (`parent` by the parent's type name, `reference` by its name without `_id`)
        or to-many (`child` by the child's type name) relation, or None."""
        if self.parent is not None and self.parent.name == name:
            return self.parent
        for rel in (*self.references, *self.children):
            if rel.name == name:
                return rel
        return None


class Registry(msgspec.Struct, frozen=True, kw_only=True):
    """All object types by name, in a stable order (parents before children)."""

    types: Mapping[str, ObjectType]

    def get(self, name: str) -> ObjectType | None:
        return self.types.get(name)

    def __getitem__(self, name: str) -> ObjectType:
        return self.types[name]

    def __iter__(self) -> Any:
        return iter(self.types.values())

    def __len__(self) -> int:
        return len(self.types)

    def referrers(self, name: str) -> list[tuple[ObjectType, Relation]]:
        """Every (type, relation) whose foreign key points at `name` (parents and references)."""
        found: list[tuple[ObjectType, Relation]] = []
        for obj in self.types.values():
            for rel in (obj.parent, *obj.references):
                if rel is not None and rel.target == name:
                    found.append((obj, rel))
        return found

    def ancestors(self, name: str) -> list[ObjectType]:
        """The parent chain of `name`, nearest first."""
        chain: list[ObjectType] = []
        obj = self.types[name]
        while obj.parent is not None:
            obj = self.types[obj.parent.target]
            chain.append(obj)
        return chain


def role_at_least(role: str, minimum: str) -> bool:
    """Whether `role` ranks at or above `minimum` in `ROLE_ORDER`.

    >>> role_at_least("admin", "editor"), role_at_least("viewer", "editor")
    (True, False)
    """
    try:
        return ROLE_ORDER.index(role) >= ROLE_ORDER.index(minimum)
    except ValueError:
        return False


def is_public_id(value: str) -> bool:
    """Whether `value` is a well-formed public id (`PUBLIC_ID_PATTERN`)."""
    return _PUBLIC_ID_RE.fullmatch(value) is not None
