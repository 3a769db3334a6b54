"""The shared declarative base, column types and mixins every Aether model builds on.

A model is a class on `Base` with `PublicIdMixin` (the hidden integer key and the public
`id_random`), `TenantMixin` (the `account_id` that scopes every query) and `TimestampMixin`
(`created_at`, `updated_at`, `version`). Per-model options live in `__aether__`
(`ModelOptions`); per-column flags live in the column's `info` (see `COLUMN_FLAGS`).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Keys a column's `info` may carry, and what they mean to the registry.
COLUMN_FLAGS = frozenset(
    {
        "parent",  # this foreign key is the parent relation (one per model)
        "hidden",  # never read, written, filtered or sorted over HTTP
        "read_only",  # returned, never written by a client
        "write_only",  # written, never returned (e.g. a password)
        "write_once",  # written on create, read-only afterwards
        "searchable",  # may appear in filters (default true)
        "sortable",  # may appear in `sort`
        "title",
        "description",
        "format",  # JSON Schema format: email, date-time, iana-timezone, ...
        "examples",
        "pattern",  # ECMA-262 and Python compatible regular expression
        "min_length",
        "max_length",
        "minimum",
        "maximum",
        "exclusive_minimum",
        "public_name",  # the field's name over HTTP when it differs from the column's
        "transform",  # callable applied to a written value before it is stored
        "items",  # JSON arrays: the JSON type of the items ("string", ...)
        "json_schema",  # JSON columns: a JSON Schema fragment the value must satisfy
        "json_type",  # JSON columns: "object" or "array"
        "server_set",  # set by the engine or an action, never by a client
        "enum",  # the allowed string values, case-sensitive
        "default",  # the JSON value a create fills in when the field is absent
    }
)

PUBLIC_ID_BYTES = 16
PUBLIC_ID_LENGTH = 22


def new_public_id() -> str:
    """A fresh public id: 22 URL-safe base64 characters from 16 random bytes."""
    return base64.urlsafe_b64encode(secrets.token_bytes(PUBLIC_ID_BYTES)).rstrip(b"=").decode()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every database, with microseconds.

    MariaDB's DATETIME keeps no offset and drops fractions unless asked (fsp=6); SQLite keeps
    text. Values are stored as naive UTC and always come back aware, in UTC.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: give an offset")
        value = value.astimezone(dt.UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], dt.datetime | None] | None:
        """One cheap call per value, no TypeDecorator machinery: MariaDB gives naive UTC and
        SQLite text (parsed by the driver-level processor first), made aware here; asyncpg
        gives aware UTC (the session's time zone is UTC) except for its two sentinels,
        0001-01-01T00:00:00 and 9999-12-31T23:59:59.999999, returned naive."""
        impl = self.impl_instance.result_processor(dialect, coltype)
        if impl is None:
            return utc_or_none

        def parsed_then_utc(value: Any) -> dt.datetime | None:
            return utc_or_none(impl(value))

        return parsed_then_utc


def utc_or_none(value: dt.datetime | None) -> dt.datetime | None:
    """`value` as an aware UTC datetime (naive values are UTC), None as None."""
    if value is None or value.tzinfo is dt.UTC:
        return value
    if value.tzinfo is None:
        # The same instant with UTC attached, rebuilt from its pickled state: about three
        # times cheaper than `replace(tzinfo=...)` or the eight-argument constructor.
        return _DATETIME(value.__reduce__()[1][0], dt.UTC)  # type: ignore[arg-type, call-arg]
    return value.astimezone(dt.UTC)


_DATETIME = dt.datetime


#: A 64-bit key on MariaDB and PostgreSQL; SQLite only auto-increments INTEGER keys.
BigIntKey = BigInteger().with_variant(Integer(), "sqlite")


@dataclass(frozen=True)
class ModelOptions:
    """Per-model options, set as `__aether__ = ModelOptions(...)` on the class.

    `validator(values) -> dict[path, message]` sees the merged state of a create or update
    (stored values overlaid with the body) and returns cross-field errors.
    """

    read_role: str = "viewer"
    write_role: str = "editor"
    create: bool = True
    update: bool = True
    delete: bool = True
    default_sort: tuple[str, ...] = ("created_at",)
    title: str | None = None
    description: str | None = None
    validator: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None
    tenant_owned: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)


MARIADB_TABLE_OPTIONS = {"charset": "utf8mb4", "collate": "utf8mb4_unicode_ci"}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    __aether__: ClassVar[ModelOptions] = ModelOptions()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = cls.__dict__.get("__table__")
        if table is not None:  # full Unicode on MariaDB whatever the server's default
            for key, value in MARIADB_TABLE_OPTIONS.items():
                table.dialect_options["mysql"][key] = value
            add_sort_indexes(table, cls.__dict__.get("__aether__", ModelOptions()))


def index_serves_sort(column: Column[Any]) -> bool:
    """Whether one index orders `column` the way a sort on it reads on every database.

    Text sorts by code point (a collation the column's own index does not follow on
    MariaDB), and NULL sorts first ascending (which PostgreSQL's default index order does
    not follow): both are sorted by the database instead.
    """
    return not column.nullable and not isinstance(column.type, String)


def sort_index_keys(table: Table, options: ModelOptions) -> list[tuple[str, ...]]:
    """The column lists of the indexes that let every keyset page walk an index.

    Each sortable column the index can serve, led by `account_id` (every list is scoped to
    an account), ends with `id` (the tie-breaker, in the same direction); the default sort
    also gets one under the parent key, for nested lists.
    """
    scope = ("account_id",) if "account_id" in table.c else ()
    parent = [c.name for c in table.c if c.info.get("parent")]
    keys: list[tuple[str, ...]] = []
    for column in table.c:
        sortable = column.info.get("sortable") and column.name != "id_random"
        if sortable and index_serves_sort(column):
            keys.append((*scope, column.name, "id"))
    default = [name.lstrip("-") for name in options.default_sort]
    if default and all(n in table.c and index_serves_sort(table.c[n]) for n in default):
        keys.append((*scope, *default, "id"))
        if parent and parent[0] not in scope:
            keys.append((*scope, parent[0], *default, "id"))
    unique: list[tuple[str, ...]] = []
    for key in keys:
        if key not in unique:
            unique.append(key)
    return unique


def add_sort_indexes(table: Table, options: ModelOptions) -> None:
    existing = {tuple(c.name for c in index.columns) for index in table.indexes}
    for key in sort_index_keys(table, options):
        if key not in existing:
            Index(f"ix_{table.name}_{'_'.join(key)}", *(table.c[name] for name in key))


class PublicIdMixin:
    """The internal integer key (hidden) and the public random id."""

    id: Mapped[int] = mapped_column(
        BigIntKey, primary_key=True, sort_order=-30, info={"hidden": True}
    )
    id_random: Mapped[str] = mapped_column(
        String(PUBLIC_ID_LENGTH), unique=True, nullable=False, default=new_public_id, sort_order=-20
    )


class TimestampMixin:
    """Server-set `created_at`, `updated_at` and the optimistic-concurrency `version`."""

    created_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(),
        nullable=False,
        default=utcnow,
        sort_order=100,
        info={"read_only": True, "sortable": True},
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(),
        nullable=False,
        default=utcnow,
        sort_order=100,
        info={"read_only": True, "sortable": True},
    )
    version: Mapped[int] = mapped_column(
        Integer, nullable=False, default=1, sort_order=101, info={"read_only": True}
    )


class TenantMixin:
    """The owning account. Set by the engine from the principal, never by a client.

    Deleting an account removes what it owns. Tenant tables add their own indexes that lead
    with `account_id` (the natural shard key).
    """

    @declared_attr
    def account_id(cls) -> Mapped[int]:
        return mapped_column(
            BigIntKey,
            ForeignKey("account.id", ondelete="CASCADE"),
            nullable=False,
            sort_order=-10,
            info={"server_set": True},
        )
