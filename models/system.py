"""The engine's own tables: plain tables, not mapped classes, so the API never serves them.

`system_setting` holds one value per name for the installation as a whole (no account):
`blob_store_id` binds this database to its blob store (see `engine.blob_binding`).
"""

from __future__ import annotations

import sqlalchemy as sa

from models.base import MARIADB_TABLE_OPTIONS, Base, UTCDateTime

__all__ = ["system_setting"]

system_setting = sa.Table(
    "system_setting",
    Base.metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    mysql_charset=MARIADB_TABLE_OPTIONS["charset"],
    mysql_collate=MARIADB_TABLE_OPTIONS["collate"],
)
