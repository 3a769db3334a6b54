"""system_setting: installation-wide values, first the blob store id this database is bound to.

Revision ID: 7d3f2a91c4e8
Revises: 0bc3c7c0e189
Create Date: 2026-12-05 21:30:00.000000

`aether gc-blobs` refuses to collect a blob store whose id differs from the one recorded
here (see engine/blob_binding.py). Written by hand in the shape autogenerate gives.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

# revision identifiers, used by Alembic.
revision: str = "7d3f2a91c4e8"
down_revision: str | Sequence[str] | None = "0bc3c7c0e189"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "system_setting",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_system_setting")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )


def downgrade() -> None:
    op.drop_table("system_setting")
