"""The registry builds descriptors from models, and refuses models it cannot serve safely."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import models  # the real domain models
from models.base import (
    NAMING_CONVENTION,
    BigIntKey,
    ModelOptions,
    PublicIdMixin,
    TenantMixin,
    TimestampMixin,
)
from models.base import Base as DomainBase
from registry import RegistryError, introspect, load_models
from registry.jsonschema import schema_index, type_schema


def fresh_base() -> type[DeclarativeBase]:
    class TestBase(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    class Account(PublicIdMixin, TimestampMixin, TestBase):
        __tablename__ = "account"
        __aether__ = ModelOptions(tenant_owned=False)
        name: Mapped[str] = mapped_column(String(10))

    return TestBase


def parent_fk(target: str) -> Any:
    return mapped_column(BigIntKey, ForeignKey(f"{target}.id"), info={"parent": True})


def test_domain_registry_describes_spec_section_3() -> None:
    registry = introspect(DomainBase)
    assert set(registry.types) == {
        "account",
        "user",
        "api_key",
        "event",
        "event_session",
        "event_person",
        "event_badge_template",
        "file",
        "event_file",
    }
    event = registry["event"]
    assert event.parent is not None and event.parent.target == "account"
    assert {c.name for c in event.children} == {
        "event_session",
        "event_person",
        "event_badge_template",
        "event_file",
    }
    assert all(c.on_delete == "CASCADE" for c in event.children)
    event_file = registry["event_file"]
    assert [(r.name, r.target, r.on_delete) for r in event_file.references] == [
        ("file", "file", "RESTRICT")
    ]
    assert event.fields[0].name == "id"
    user = registry["user"]
    password = user.field("password")
    assert password is not None and password.write_only and password.column == "password_hash"
    assert user.field("password_hash") is None
    assert registry["api_key"].field("secret_hash") is None
    assert not registry["file"].permissions.create
    assert registry.ancestors("event_session")[0].name == "event"
    assert next(iter(registry)).name == "account"  # parents before children


def test_a_model_without_id_random_is_refused() -> None:
    base = fresh_base()

    class Thing(TenantMixin, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "thing"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)

    with pytest.raises(RegistryError, match=r"'thing'.*id_random"):
        introspect(base)


def test_a_reserved_name_is_refused() -> None:
    base = fresh_base()

    class Search(PublicIdMixin, TenantMixin, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "search"

    with pytest.raises(RegistryError, match=r"'search'.*reserved"):
        introspect(base)


def test_a_tenant_table_without_account_id_is_refused() -> None:
    base = fresh_base()

    class Loose(PublicIdMixin, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "loose"

    with pytest.raises(RegistryError, match=r"'loose'.*account_id"):
        introspect(base)


def test_two_parents_are_refused() -> None:
    base = fresh_base()

    class Left(PublicIdMixin, TenantMixin, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "left_side"

    class Both(PublicIdMixin, TenantMixin, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "both"
        left_id: Mapped[int] = parent_fk("left_side")
        other_id: Mapped[int] = parent_fk("account")

    with pytest.raises(RegistryError, match=r"'both'.*two parents"):
        introspect(base)


def test_a_cycle_of_parents_is_refused() -> None:
    base = fresh_base()

    class Egg(PublicIdMixin, TenantMixin, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "egg"
        hen_id: Mapped[int] = mapped_column(
            BigIntKey, ForeignKey("hen.id", use_alter=True), info={"parent": True}
        )

    class Hen(PublicIdMixin, TenantMixin, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "hen"
        egg_id: Mapped[int] = parent_fk("egg")

    with pytest.raises(RegistryError, match=r"cycle"):
        introspect(base)


def test_unknown_info_keys_are_refused() -> None:
    base = fresh_base()

    class Typo(PublicIdMixin, TenantMixin, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "typo"
        name: Mapped[str] = mapped_column(String(5), info={"sortabel": True})

    with pytest.raises(RegistryError, match=r"'typo'.*sortabel"):
        introspect(base)


def plain_strings_only(node: Any, path: str = "registry") -> list[str]:
    """Paths under `node` holding a `str` subclass (SQLAlchemy's `quoted_name`, say)."""
    if isinstance(node, str):
        return [] if type(node) is str else [f"{path}: {type(node).__name__} {node!r}"]
    if isinstance(node, dict):
        return [
            bad
            for key, value in node.items()
            for bad in (*plain_strings_only(key, path), *plain_strings_only(value, f"{path}.{key}"))
        ]
    if isinstance(node, list | tuple | set | frozenset):
        return [
            bad for i, item in enumerate(node) for bad in plain_strings_only(item, f"{path}[{i}]")
        ]
    if isinstance(node, msgspec.Struct):
        return [
            bad
            for name in node.__struct_fields__
            for bad in plain_strings_only(getattr(node, name), f"{path}.{name}")
        ]
    return []


def test_a_model_declared_with_core_columns_yields_plain_names() -> None:
    """Core `Column`s and `Table`s name things with `quoted_name`, which msgspec refuses."""

    class TestBase(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    base = TestBase

    class Account(PublicIdMixin, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "account"
        __aether__ = ModelOptions(tenant_owned=False)

    account = Account.__table__

    class Event(PublicIdMixin, TenantMixin, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "event"
        name: Mapped[str] = mapped_column(String(10))

    stamps = Event.__table__.c
    sponsor = Table(
        "sponsor",
        base.metadata,
        Column("id", BigIntKey, primary_key=True, info={"hidden": True}),
        Column("id_random", String(22), unique=True, nullable=False),
        Column("account_id", BigIntKey, ForeignKey(account.c.id), nullable=False),
        Column(
            "event_id", BigIntKey, ForeignKey("event.id"), nullable=False, info={"parent": True}
        ),
        Column("name", String(100), nullable=False, info={"sortable": True}),
        Column("level", String(8), info={"enum": ["gold", "silver"]}),
        stamps.created_at._copy(),
        stamps.updated_at._copy(),
        stamps.version._copy(),
    )

    class Sponsor:
        __aether__ = ModelOptions(default_sort=("name",))

    base.registry.map_imperatively(Sponsor, sponsor)

    registry = introspect(base)
    assert registry["event"].children[0].name == "sponsor"
    assert plain_strings_only(list(registry)) == []
    for obj in registry:
        msgspec.json.encode(type_schema(obj, registry))
    msgspec.json.encode(schema_index(registry))


def write_package(root: Path, name: str, modules: dict[str, str]) -> None:
    for relative, text in {"__init__.py": "", **modules}.items():
        path = root / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_load_models_imports_every_module_of_a_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module dropped into a model package is found: no hand-kept list to forget."""
    name = f"aether_pkg_{secrets.token_hex(4)}"
    write_package(
        tmp_path,
        name,
        {"sponsor.py": "", "_private.py": "", "nested/__init__.py": "", "nested/deep.py": ""},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    load_models([name, "models"])
    for module in ("sponsor", "_private", "nested", "nested.deep"):
        assert f"{name}.{module}" in sys.modules, module
    for path in Path(models.__file__).parent.glob("*.py"):
        assert path.stem == "__init__" or f"models.{path.stem}" in sys.modules, path.name


def test_load_models_names_the_module_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"aether_pkg_{secrets.token_hex(4)}"
    write_package(tmp_path, name, {"broken.py": "import aether_no_such_module\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RegistryError, match=rf"{name}\.broken.*aether_no_such_module"):
        load_models([name])
    with pytest.raises(RegistryError, match=r"'aether_missing_models'"):
        load_models(["aether_missing_models"])


@pytest.mark.parametrize("with_account_id", [False, True])
def test_a_shared_type_is_refused_except_account_itself(with_account_id: bool) -> None:
    """`tenant_owned=False` is how `account` is declared; on any other type list and create
    would fail at run time (nothing scopes or fills them), so start-up refuses it."""
    base = fresh_base()
    mixins = (TenantMixin,) if with_account_id else ()

    class Country(PublicIdMixin, *mixins, TimestampMixin, base):  # type: ignore[valid-type,misc]
        __tablename__ = "country"
        __aether__ = ModelOptions(tenant_owned=False)
        name: Mapped[str] = mapped_column(String(50))

    with pytest.raises(RegistryError, match=r"'country'.*tenant_owned=False.*'account'"):
        introspect(base)


def test_the_account_type_itself_is_not_tenant_owned() -> None:
    registry = introspect(fresh_base())
    assert not registry["account"].tenant_owned
