"""The registry builds descriptors from models, and refuses models it cannot serve safely."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import ForeignKey, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import models  # noqa: F401  # the real domain models
from models.base import (
    NAMING_CONVENTION,
    BigIntKey,
    ModelOptions,
    PublicIdMixin,
    TenantMixin,
    TimestampMixin,
)
from models.base import Base as DomainBase
from registry import RegistryError, introspect


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
