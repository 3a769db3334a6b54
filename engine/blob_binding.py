"""Binding a blob store to its database, so garbage collection never reads the wrong rows.

The store and the database each record one store id (the store in its own metadata, the
database in `system_setting`), written at first use, database first. `bind_blob_store`
records a new id when neither has one, and raises `BlobStoreMismatchError` when they
disagree: a collection run against another database would delete every blob that database
does not reference, that is, all of the right database's blobs.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.blobs import BlobStore
from engine.errors import ServiceUnavailableError
from models.base import utcnow

if TYPE_CHECKING:
    from engine.runtime import Runtime

__all__ = [
    "SETTING_NAME",
    "BlobStoreMismatchError",
    "bind_blob_store",
    "bind_runtime_store",
    "database_store_id",
    "require_bound_store",
]

logger = logging.getLogger(__name__)

SETTING_NAME = "blob_store_id"


class BlobStoreMismatchError(Exception):
    """The blob store and the database are not bound to each other; the message says how."""


async def database_store_id(engine: AsyncEngine, table: sa.Table) -> str | None:
    """The store id the database records, or None when it has none yet."""
    async with engine.connect() as conn:
        found = await conn.execute(sa.select(table.c.value).where(table.c.name == SETTING_NAME))
        value = found.scalar()
    return None if value is None else str(value)


async def _record(engine: AsyncEngine, table: sa.Table, store_id: str) -> str:
    """Insert the database's store id; when another process did first, answer its id."""
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(table).values(name=SETTING_NAME, value=store_id, created_at=utcnow())
            )
    except sa_exc.IntegrityError:
        pass
    recorded = await database_store_id(engine, table)
    assert recorded is not None  # inserted now, or by the process that won the key
    return recorded


def _mismatch(store: BlobStore, store_id: str, database_id: str | None) -> str:
    where = f"the blob store at {store.location} is bound to another database"
    if database_id is None:
        return (
            f"{where} (store id {store_id}); this database records no store: point "
            "AE_DATABASE_URL at the database the store belongs to"
        )
    return (
        f"{where} (store id {store_id}; this database records store {database_id}): "
        "check AE_DATABASE_URL and AE_BLOB_DIR / AE_BLOB_URL"
    )


async def bind_blob_store(engine: AsyncEngine, table: sa.Table, store: BlobStore) -> str:
    """The store id `store` and the database share, recorded in both at first use.

    The database records an id first, then the store takes the database's id. So a store
    holding an id always has that id in its database; a store with an id and a database
    without one (or with another) is another database's store: BlobStoreMismatchError.
    A store without an id takes the database's (first use, or a run that stopped between
    the two writes). Racing first uses agree: the database keeps one row, the store one id,
    and of two databases racing for one new store the one that loses is refused.
    """
    store_id = await store.read_store_id()
    database_id = await database_store_id(engine, table)
    if store_id is not None and database_id is None:
        raise BlobStoreMismatchError(_mismatch(store, store_id, database_id))
    if database_id is None:
        database_id = await _record(engine, table, uuid.uuid4().hex)
    if store_id is None:
        store_id = await store.claim_store_id(database_id)
    if store_id != database_id:
        raise BlobStoreMismatchError(_mismatch(store, store_id, database_id))
    return store_id


async def require_bound_store(rt: Runtime) -> str:
    """The runtime's store id, binding store and database on the process's first call.

    Called before any blob is written, so the store is bound before it holds a blob this
    database references. A store bound elsewhere is a configuration error: 503, logged.
    """
    if rt.blob_store_id is None:
        try:
            rt.blob_store_id = await bind_blob_store(rt.engine, _table(rt), rt.blobs)
        except BlobStoreMismatchError as exc:
            logger.error("blob store refused: %s", exc)
            raise ServiceUnavailableError(
                "The blob store is not bound to this database; see the server log"
            ) from exc
    return rt.blob_store_id


async def bind_runtime_store(rt: Runtime) -> None:
    """Bind at start-up when the database is ready; otherwise the first upload binds.

    Never raises: a database not yet migrated or unreachable leaves the binding for later,
    and a mismatch is logged (uploads then answer 503 until the configuration is fixed).
    """
    try:
        await require_bound_store(rt)
    except ServiceUnavailableError:
        pass  # logged by require_bound_store
    except Exception as exc:  # not migrated, or the database is down: bind on first use
        logger.info("blob store binding deferred: %s", type(exc).__name__)


def _table(rt: Runtime) -> sa.Table:
    return rt.tables["system_setting"]
