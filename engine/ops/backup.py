"""`aether backup` and `aether restore`: the database and its blobs, together, in one archive.

The archive (`aether-backup-<UTC time>.tar`) holds `manifest.json` (schema revision, rows
and a checksum per table, the dump's and every blob's SHA-256), the database dump (see
`engine.ops.dumps`) and `blobs/<sha256>` for every blob a `file` row of the dump names.
A restore refuses a target that holds tables or blobs unless forced, an archive from
another kind of database, and one from a schema revision this installation does not know
(a newer one); it checks every member's hash, then every table against the manifest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path
from typing import IO, Literal, TypeVar

import msgspec
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from engine.blob_binding import SETTING_NAME, bind_blob_store
from engine.blobs import CHUNK_SIZE, BlobStore, FileSystemBlobStore
from engine.db import create_engine, dialect_name
from engine.errors import NotFoundError
from engine.migrate import alembic_config, head_revision
from engine.ops.archive import (
    MANIFEST,
    BlobFile,
    HashingReader,
    Member,
    OpsError,
    TableSummary,
    add_bytes,
    archive_path,
    blob_member,
    describe_differences,
    hash_file,
    in_thread_with_loop,
    put_blob,
    read_member_chunks,
    sha_of_member,
    tar_info,
    write_atomically,
)
from engine.ops.dumps import (
    drop_tables,
    dump_database,
    dump_suffix,
    existing_tables,
    load_database,
    read_target,
)
from engine.ops.progress import Advance, progress_bar
from engine.settings import Settings

FORMAT: Literal["aether-backup"] = "aether-backup"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 256 * 1024 * 1024

_M = TypeVar("_M", bound=msgspec.Struct)


class BackupManifest(msgspec.Struct, frozen=True, kw_only=True):
    format: Literal["aether-backup"] = FORMAT
    format_version: int = FORMAT_VERSION
    created_at: str
    aether_version: str
    dialect: str
    revision: str
    database: Member
    tables: dict[str, TableSummary]
    blobs: dict[str, int]  # sha256 -> size


class BackupResult(msgspec.Struct, frozen=True):
    path: str
    revision: str
    tables: int
    rows: int
    blobs: int


class RestoreResult(msgspec.Struct, frozen=True):
    revision: str
    tables: int
    rows: int
    blobs: int
    head: bool  # the restored schema is the latest this installation knows


def open_blob_store(settings: Settings) -> BlobStore:
    """The installation's blob store, as the server opens it (a directory: a bucket is
    backed up with the object store's own tools, and this refuses rather than miss it)."""
    if settings.blob_url:
        raise OpsError(
            f"the blobs are in {settings.blob_url} (AE_BLOB_URL): backup, restore, export and "
            "import handle a blob directory (AE_BLOB_DIR) only; copy the bucket with S3's tools"
        )
    return FileSystemBlobStore(Path(settings.blob_dir))


def aether_version() -> str:
    try:
        return metadata.version("aether")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- backup ---------------------------------------------------------------------------------


async def backup(
    settings: Settings, output_dir: Path, *, show_progress: bool | None = None
) -> BackupResult:
    """Write one archive of the database and the blobs it references into `output_dir`."""
    await asyncio.to_thread(output_dir.mkdir, parents=True, exist_ok=True)
    store = open_blob_store(settings)
    dialect = dialect_name(settings.database_url)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".aether-backup-") as work:
        dump_path = Path(work) / f"database.{dump_suffix(dialect)}"
        snapshot = await dump_database(settings, dump_path)
        if snapshot.revision is None:
            raise OpsError("the database is not migrated: there is nothing to back up")
        sizes: dict[str, int] = {}
        for sha in sorted(snapshot.blobs):
            try:
                sizes[sha] = await store.size(sha)
            except NotFoundError:
                raise OpsError(
                    f"blob {sha}, which a file row references, is missing from the blob "
                    f"store at {store.location}"
                ) from None
        dump_sha, dump_size = await asyncio.to_thread(hash_file, dump_path)
        manifest = BackupManifest(
            created_at=dt.datetime.now(dt.UTC).isoformat(),
            aether_version=aether_version(),
            dialect=dialect,
            revision=snapshot.revision,
            database=Member(f"database.{dump_suffix(dialect)}", dump_size, dump_sha),
            tables=snapshot.tables,
            blobs=sizes,
        )
        target = archive_path(output_dir, "backup")
        with progress_bar("backup", dump_size + sum(sizes.values()), enabled=show_progress) as bar:

            def write(loop: asyncio.AbstractEventLoop) -> Path:
                return write_atomically(
                    target, lambda temp: _write_backup(temp, manifest, dump_path, store, loop, bar)
                )

            await in_thread_with_loop(write)
    return BackupResult(
        path=str(target),
        revision=manifest.revision,
        tables=len(manifest.tables),
        rows=sum(t.rows for t in manifest.tables.values()),
        blobs=len(manifest.blobs),
    )


def write_blob_member(
    tar: tarfile.TarFile,
    store: BlobStore,
    sha: str,
    size: int,
    loop: asyncio.AbstractEventLoop,
    advance: Advance,
) -> None:
    """Copy one blob from the store into `tar` (in a worker thread), checking its hash."""
    reader = asyncio.run_coroutine_threadsafe(store.open(sha), loop).result()
    try:
        source = HashingReader(BlobFile(reader, loop), advance)
        tar.addfile(tar_info(blob_member(sha), size), source)
    finally:
        asyncio.run_coroutine_threadsafe(reader.aclose(), loop).result()
    if source.hash.hexdigest() != sha:
        raise OpsError(f"blob {sha} in the store at {store.location} is damaged")


def _write_backup(
    temp: Path,
    manifest: BackupManifest,
    dump_path: Path,
    store: BlobStore,
    loop: asyncio.AbstractEventLoop,
    advance: Advance,
) -> None:
    with tarfile.open(temp, "w", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, MANIFEST, msgspec.json.format(msgspec.json.encode(manifest)))
        with dump_path.open("rb") as handle:
            tar.addfile(
                tar_info(manifest.database.name, manifest.database.size),
                HashingReader(handle, advance),
            )
        for sha, size in manifest.blobs.items():
            write_blob_member(tar, store, sha, size, loop, advance)


# -- restore ---------------------------------------------------------------------------------


def check_revision(settings: Settings, revision: str) -> bool:
    """Refuse a revision this installation's migrations do not know (a newer Aether's);
    True when `revision` is the latest."""
    scripts = ScriptDirectory.from_config(alembic_config(settings))
    head = head_revision(settings)
    for name in revision.split(","):
        try:
            known = scripts.get_revision(name) is not None
        except Exception:  # alembic's ResolutionError and friends: an unknown id
            known = False
        if not known:
            raise OpsError(
                f"the archive is at schema revision {name}, which this installation does not "
                f"know (its latest is {head}): it comes from a newer Aether; upgrade first"
            )
    return revision == head


def read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo | None, kind: type[_M]) -> _M:
    """The manifest, which must be the archive's first member."""
    if member is None or member.name != MANIFEST or not member.isfile():
        raise OpsError("not an Aether archive: its first member is not manifest.json")
    if member.size > MAX_MANIFEST_BYTES:
        raise OpsError("the archive's manifest is too large")
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file
    try:
        return msgspec.json.decode(handle.read(), type=kind)
    except msgspec.ValidationError as exc:
        raise OpsError(f"the archive's manifest is not one this command reads: {exc}") from None
    except msgspec.DecodeError:
        raise OpsError("the archive's manifest is not JSON") from None


def open_archive(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r|")
    except FileNotFoundError:
        raise OpsError(f"no archive at {path}") from None
    except (tarfile.TarError, IsADirectoryError, PermissionError) as exc:
        raise OpsError(f"cannot read the archive {path}: {exc}") from None


async def next_member(tar: tarfile.TarFile) -> tarfile.TarInfo | None:
    try:
        return await asyncio.to_thread(tar.next)
    except tarfile.TarError as exc:
        raise OpsError(f"the archive is damaged: {exc}") from None


def _extract_checked(
    tar: tarfile.TarFile, member: tarfile.TarInfo, expected: Member, target: Path, advance: Advance
) -> None:
    handle: IO[bytes] | None = tar.extractfile(member)
    if handle is None or member.name != expected.name or member.size != expected.size:
        raise OpsError(f"the archive's member {member.name} is not the {expected.name} expected")
    source = HashingReader(handle, advance)
    with target.open("wb") as out:
        while chunk := source.read(CHUNK_SIZE):
            out.write(chunk)
    if source.hash.hexdigest() != expected.sha256:
        raise OpsError(f"the archive's {expected.name} is damaged (its hash differs)")


async def store_in_use(store: BlobStore) -> bool:
    """True when the store holds a blob or is bound to a database already."""
    if await store.read_store_id() is not None:
        return True
    async for _ in store.iter_blobs():
        return True
    return False


async def rebind_store(settings: Settings, store: BlobStore) -> None:
    """Bind the restored database to the store it was restored with: the store keeps its
    id when it has one (the database takes it), else both take the database's."""
    import models  # noqa: F401  # registers system_setting
    from models.base import Base

    table = Base.metadata.tables["system_setting"]
    engine = create_engine(settings)
    try:
        store_id = await store.read_store_id()
        if store_id is None:
            await bind_blob_store(engine, table, store)
            return
        async with engine.begin() as conn:
            where = table.c.name == SETTING_NAME
            recorded = (await conn.execute(sa.select(table.c.value).where(where))).scalar()
            if recorded is None:
                await conn.execute(
                    sa.insert(table).values(
                        name=SETTING_NAME, value=store_id, created_at=dt.datetime.now(dt.UTC)
                    )
                )
            elif recorded != store_id:
                await conn.execute(sa.update(table).where(where).values(value=store_id))
    finally:
        await engine.dispose()


async def restore(
    settings: Settings, archive: Path, *, force: bool = False, show_progress: bool | None = None
) -> RestoreResult:
    """Restore `archive` into the configured database and blob store (see the module doc)."""
    dialect = dialect_name(settings.database_url)
    store = open_blob_store(settings)
    tar = open_archive(archive)
    try:
        manifest = read_manifest(tar, await next_member(tar), BackupManifest)
        if manifest.dialect != dialect:
            raise OpsError(
                f"the archive holds a {manifest.dialect} dump and the target is {dialect}: "
                "restore into the same kind of database (or move accounts with export/import)"
            )
        at_head = check_revision(settings, manifest.revision)
        tables = await existing_tables(settings)
        in_use = await store_in_use(store)
        if (tables or in_use) and not force:
            what = "the database holds tables" if tables else "the blob store holds blobs"
            raise OpsError(f"the target is not empty ({what}): add --force to replace it")
        total = manifest.database.size + sum(manifest.blobs.values())
        with (
            tempfile.TemporaryDirectory(prefix="aether-restore-") as work,
            progress_bar("restore", total, enabled=show_progress) as advance,
        ):
            member = await next_member(tar)
            if member is None:
                raise OpsError("the archive ends after its manifest")
            dump_path = Path(work) / manifest.database.name
            await asyncio.to_thread(
                _extract_checked, tar, member, manifest.database, dump_path, advance
            )
            await drop_tables(settings, tables)
            await load_database(settings, dump_path)
            seen = await _restore_blobs(tar, manifest, store, advance)
        missing = sorted(set(manifest.blobs) - seen)
        if missing:
            raise OpsError(f"the archive lacks {len(missing)} blob(s) its manifest lists")
    finally:
        tar.close()
    found = await read_target(settings)
    differences = describe_differences(manifest.tables, found.tables)
    if differences:
        raise OpsError("the restored database differs from the archive: " + "; ".join(differences))
    await rebind_store(settings, store)
    return RestoreResult(
        revision=manifest.revision,
        tables=len(manifest.tables),
        rows=sum(t.rows for t in manifest.tables.values()),
        blobs=len(manifest.blobs),
        head=at_head,
    )


async def _restore_blobs(
    tar: tarfile.TarFile, manifest: BackupManifest, store: BlobStore, advance: Advance
) -> set[str]:
    seen: set[str] = set()
    while (member := await next_member(tar)) is not None:
        sha = sha_of_member(member.name)
        if sha is None or sha not in manifest.blobs or not member.isfile():
            raise OpsError(f"the archive holds {member.name}, which its manifest does not list")
        handle = tar.extractfile(member)
        assert handle is not None  # a regular file
        await put_blob(store, sha, manifest.blobs[sha], read_member_chunks(handle, advance))
        seen.add(sha)
    return seen
