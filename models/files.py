"""Stored files: one row per distinct content per account, made only by uploads."""

from __future__ import annotations

from sqlalchemy import BigInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, ModelOptions, PublicIdMixin, TenantMixin, TimestampMixin


class File(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "file"
    __aether__ = ModelOptions(
        create=False,
        default_sort=("-created_at",),
        title="File",
        description="Uploaded content, addressed by its SHA-256.",
    )
    __table_args__ = (UniqueConstraint("account_id", "sha256"),)

    name: Mapped[str | None] = mapped_column(
        String(255), info={"sortable": True, "description": "Sanitised original file name"}
    )
    sha256: Mapped[str] = mapped_column(
        String(64), nullable=False, info={"read_only": True, "pattern": "^[0-9a-f]{64}$"}
    )
    size: Mapped[int] = mapped_column(
        BigInteger, nullable=False, info={"read_only": True, "sortable": True, "minimum": 0}
    )
    mime_type: Mapped[str] = mapped_column(
        String(255), nullable=False, info={"read_only": True, "sortable": True}
    )
