"""`aether gc-blobs` against the database its blob store is bound to, on every backend.

A blob store and a database are bound by one store id, recorded in both at first use; a
collection against any other database is refused before a blob is touched.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine import migrate
from engine.blob_binding import SETTING_NAME, BlobStoreMismatchError, bind_blob_store
from engine.blobs import FileSystemBlobStore
from engine.cli import main
from engine.db import create_engine
from engine.gc import gc_blobs
from engine.settings import Settings
from models.base import Base
from tests.backends import fresh_database
from tests.integration.conftest import Api, make_settings
from tests.integration.test_actions import PDF, chunks, make_event, upload


async def create_schema(url: str) -> None:
    """A second database at the latest migration, as `aether migrate` leaves it."""
    await migrate.upgrade(Settings(env="test", database_url=url))


async def recorded_store_id(url: str) -> str | None:
    table = Base.metadata.tables["system_setting"]
    engine = create_engine(Settings(database_url=url))
    try:
        async with engine.connect() as conn:
            found = await conn.execute(sa.select(table.c.value).where(table.c.name == SETTING_NAME))
            value = found.scalar()
    finally:
        await engine.dispose()
    return None if value is None else str(value)


async def test_gc_against_another_database_is_refused_and_deletes_nothing(
    api: Api, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The server's store has its blobs; gc-blobs run with AE_DATABASE_URL pointing at a
    second database (and the same default blob dir) must not remove them."""
    event = await make_event(api)
    r = await upload(api, event["id"], [("file", ("a.pdf", PDF, "application/pdf"))])
    assert r.status_code == 201, r.text
    store = api.runtime.blobs
    sha = hashlib.sha256(PDF).hexdigest()
    bound = await store.read_store_id()
    assert bound is not None and bound == await recorded_store_id(api.runtime.settings.database_url)

    async with fresh_database(backend, tmp_path) as other_url:
        await create_schema(other_url)
        other = make_settings(other_url, tmp_path)
        assert other.blob_dir == api.runtime.settings.blob_dir
        with pytest.raises(BlobStoreMismatchError) as info:
            await gc_blobs(other, dry_run=False, grace_seconds=0)
        assert "another database" in str(info.value) and bound in str(info.value)
        assert await store.exists(sha)
        assert await recorded_store_id(other_url) is None  # nothing bound by a refusal

        monkeypatch.setenv("AE_DATABASE_URL", other_url)
        monkeypatch.setenv("AE_BLOB_DIR", other.blob_dir)
        monkeypatch.setenv("AE_ENV", "test")
        assert await asyncio.to_thread(main, ["gc-blobs", "--grace", "0"]) == 1
        out, err = capsys.readouterr()
        assert out == "" and "another database" in err
        assert await store.exists(sha)

    # Against its own database the collection runs: the referenced blob stays.
    orphan = (await store.put(chunks(b"nobody references these bytes"))).sha256
    report = await gc_blobs(api.runtime.settings, dry_run=False, grace_seconds=0)
    assert report.removed_blobs == [orphan]
    assert await store.exists(sha) and not await store.exists(orphan)


async def test_first_collection_binds_both_and_other_ids_are_refused(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path)
    first = await gc_blobs(settings, dry_run=True, grace_seconds=0)
    assert first.removed_blobs == []
    store_id = await recorded_store_id(database_url)
    assert store_id is not None
    assert (Path(settings.blob_dir) / ".store-id").read_text().strip() == store_id
    again = await gc_blobs(settings, dry_run=False, grace_seconds=0)
    assert again.removed_blobs == []
    # A store with no id yet (new, or a run stopped between the two writes) takes the
    # database's: the database is written first, so its id is the binding.
    elsewhere = make_settings(database_url, tmp_path, blob_dir=str(tmp_path / "elsewhere"))
    await gc_blobs(elsewhere, dry_run=False, grace_seconds=0)
    assert (tmp_path / "elsewhere" / ".store-id").read_text().strip() == store_id
    # A store holding another id belongs to another database.
    (Path(settings.blob_dir) / ".store-id").write_text("0" * 32 + "\n")
    with pytest.raises(BlobStoreMismatchError, match=f"records store {store_id}"):
        await gc_blobs(settings, dry_run=False, grace_seconds=0)


async def test_racing_first_binds_agree_and_two_databases_cannot_share_a_store(
    database_url: str, backend: str, tmp_path: Path
) -> None:
    table = Base.metadata.tables["system_setting"]
    engine = create_engine(Settings(database_url=database_url))
    try:
        store = FileSystemBlobStore(tmp_path / "shared")
        ids = await asyncio.gather(*(bind_blob_store(engine, table, store) for _ in range(6)))
        assert len(set(ids)) == 1 and await store.read_store_id() == ids[0]

        fresh = FileSystemBlobStore(tmp_path / "fresh")
        async with fresh_database(backend, tmp_path) as other_url:
            await create_schema(other_url)
            other = create_engine(Settings(database_url=other_url))
            try:
                outcomes = await asyncio.gather(
                    bind_blob_store(engine, table, fresh),
                    bind_blob_store(other, table, fresh),
                    return_exceptions=True,
                )
            finally:
                await other.dispose()
        won = [o for o in outcomes if isinstance(o, str)]
        lost = [o for o in outcomes if isinstance(o, BlobStoreMismatchError)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert await fresh.read_store_id() == won[0]
    finally:
        await engine.dispose()
