"""Accounts (the tenants), their users and their API keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import (
    Base,
    BigIntKey,
    ModelOptions,
    PublicIdMixin,
    TenantMixin,
    TimestampMixin,
    UTCDateTime,
)
from models.security import hash_password
from registry.descriptors import TENANT_ROLES

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"


class Account(PublicIdMixin, TimestampMixin, Base):
    __tablename__ = "account"
    __aether__ = ModelOptions(
        tenant_owned=False,
        read_role="viewer",
        write_role="owner",
        create=False,
        delete=False,
        default_sort=("name",),
        title="Account",
        description="A tenant: everything else belongs to exactly one account.",
    )

    name: Mapped[str] = mapped_column(
        String(200), nullable=False, info={"sortable": True, "title": "Name"}
    )
    slug: Mapped[str] = mapped_column(
        String(63),
        nullable=False,
        unique=True,
        info={"pattern": SLUG_PATTERN, "sortable": True, "write_once": True, "title": "Slug"},
    )
    status: Mapped[str] = mapped_column(
        String(16),
        nullable=False,
        default="active",
        info={"enum": ["active", "suspended"], "default": "active", "read_only": True},
    )
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSON, nullable=False, default=dict, info={"json_type": "object", "default": {}}
    )


class User(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "user"
    __aether__ = ModelOptions(
        read_role="admin",
        write_role="admin",
        default_sort=("email",),
        title="User",
        description="A person who can log in to the account.",
    )
    __table_args__ = (UniqueConstraint("account_id", "email"),)

    email: Mapped[str] = mapped_column(
        String(320), nullable=False, info={"format": "email", "sortable": True, "title": "Email"}
    )
    name: Mapped[str | None] = mapped_column(String(200), info={"sortable": True})
    role: Mapped[str] = mapped_column(
        String(16),
        nullable=False,
        default="viewer",
        info={"enum": list(TENANT_ROLES), "default": "viewer"},
    )
    password_hash: Mapped[str | None] = mapped_column(
        String(255),
        info={
            "public_name": "password",
            "write_only": True,
            "min_length": 12,
            "max_length": 1024,
            "transform": hash_password,
            "title": "Password",
        },
    )
    is_active: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, info={"default": True}
    )
    last_login_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime(), info={"read_only": True, "sortable": True}
    )


class ApiKey(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    """A machine credential `ae_<prefix>_<secret>`; only the prefix and a hash are stored.

    A system key (`aether create-api-key --system`) has no account and the role `system`:
    it belongs to no tenant, so no account's list shows it.
    """

    __tablename__ = "api_key"
    __aether__ = ModelOptions(
        read_role="admin",
        write_role="admin",
        create=False,  # only the api_key action makes keys: it shows the secret once
        default_sort=("name",),
        title="API key",
    )
    __table_args__ = (Index("ix_api_key_account_id_name", "account_id", "name"),)

    account_id: Mapped[int | None] = mapped_column(  # type: ignore[assignment]  # nullable for system keys
        BigIntKey,
        ForeignKey("account.id", ondelete="CASCADE"),
        nullable=True,
        sort_order=-10,
        info={"server_set": True},
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False, info={"sortable": True})
    role: Mapped[str] = mapped_column(
        String(16),
        nullable=False,
        default="viewer",
        info={"enum": list(TENANT_ROLES), "default": "viewer", "write_once": True},
    )
    prefix: Mapped[str] = mapped_column(
        String(16), nullable=False, unique=True, info={"read_only": True}
    )
    secret_hash: Mapped[str] = mapped_column(String(128), nullable=False, info={"hidden": True})
    expires_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime(), info={"sortable": True, "write_once": True}
    )
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), info={"sortable": True})
    last_used_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime(), info={"read_only": True, "sortable": True}
    )
