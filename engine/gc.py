"""`aether gc-blobs`: remove blobs that no `file` row references, and stale temporary files.

The collection runs only against the database the blob store is bound to (see
`engine.blob_binding`): another database's rows would leave every blob unreferenced.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.blob_binding import bind_blob_store
from engine.blob_gc import GcReport, collect_garbage
from engine.blobs import create_blob_store
from engine.db import create_engine
from engine.settings import Settings

GRACE_SECONDS = 3600.0


async def gc_blobs(
    settings: Settings, *, dry_run: bool, grace_seconds: float = GRACE_SECONDS
) -> GcReport:
    """Collect garbage in the blob store against the hashes the `file` table references.

    Blobs younger than the grace period are kept: an upload may have written its blob and
    not yet committed its rows. Raises BlobStoreMismatchError, before touching any blob,
    when the store and the database are not bound to each other; on first use (neither
    records a store id) it binds them.
    """
    import models  # noqa: F401  # registers the file and system_setting tables
    from models.base import Base

    file = Base.metadata.tables["file"]
    store = create_blob_store(settings)
    try:
        engine = create_engine(settings)
        try:
            await bind_blob_store(engine, Base.metadata.tables["system_setting"], store)
            async with engine.connect() as conn:
                query = sa.select(file.c.sha256).distinct()
                referenced = set((await conn.execute(query)).scalars())
        finally:
            await engine.dispose()
        return await collect_garbage(
            store, referenced, grace_seconds=grace_seconds, dry_run=dry_run
        )
    finally:
        await store.close()
