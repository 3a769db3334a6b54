"""`aether export --account SLUG` and `aether import ARCHIVE`: one account, portable.

The archive (`aether-export-<slug>-<UTC time>.tar`) holds `manifest.json`, `rows.jsonl`
(one `{"table", "row"}` object per line, parents before children) and `blobs/<sha256>`
for every file of the account. A row carries every column but the internal `id` and
`account_id`; a reference to another row carries that row's public id. An import inserts
the rows under new internal ids with the same public ids, in one transaction, into a
database at the same schema revision, and refuses an account slug or public id that the
installation already has. The rows include password and API-key hashes: keep the archive
as secret as a backup.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.blob_binding import bind_blob_store
from engine.blobs import BlobStore
from engine.db import create_engine, dialect_name, unlimited
from engine.errors import NotFoundError
from engine.migrate import current_revision
from engine.ops.archive import (
    MANIFEST,
    HashingReader,
    Member,
    OpsError,
    add_bytes,
    archive_path,
    hash_file,
    in_thread_with_loop,
    put_blob,
    read_member_chunks,
    sha_of_member,
    tar_info,
    write_atomically,
)
from engine.ops.backup import (
    _extract_checked,
    aether_version,
    check_revision,
    next_member,
    open_archive,
    open_blob_store,
    read_manifest,
    write_blob_member,
)
from engine.ops.progress import Advance, progress_bar
from engine.runtime import build_registry
from engine.settings import Settings

FORMAT: Literal["aether-export"] = "aether-export"
ROWS = "rows.jsonl"
ACCOUNT_TABLE = "account"
INSERT_BATCH = 500


class ExportManifest(msgspec.Struct, frozen=True, kw_only=True):
    format: Literal["aether-export"] = FORMAT
    format_version: int = 1
    created_at: str
    aether_version: str
    revision: str
    account: str  # the slug
    account_id: str  # the public id
    rows: Member
    tables: dict[str, int]  # rows per table
    blobs: dict[str, int]  # sha256 -> size


class ExportResult(msgspec.Struct, frozen=True):
    path: str
    account: str
    rows: int
    blobs: int


class ImportResult(msgspec.Struct, frozen=True):
    account: str
    account_id: str
    rows: int
    blobs: int


class _Line(msgspec.Struct, frozen=True):
    table: str
    row: dict[str, Any]


def account_tables(tables: dict[str, sa.Table]) -> list[sa.Table]:
    """The account table, then every table holding `account_id`, parents before children."""
    chosen = [t for t in tables.values() if t.name == ACCOUNT_TABLE or "account_id" in t.c]
    for table in chosen:
        for column in table.c:
            for fk in column.foreign_keys:
                if fk.column.table is table:
                    raise OpsError(f"table {table.name} refers to itself: export cannot order it")
    return sa.sql.util.sort_tables(chosen)


def _references(table: sa.Table) -> dict[str, str]:
    """Column -> referenced table, for every foreign key but the account's."""
    found: dict[str, str] = {}
    for column in table.c:
        if column.name == "account_id":
            continue
        for fk in column.foreign_keys:
            found[column.name] = fk.column.table.name
    return found


# -- export --------------------------------------------------------------------------------


async def _account_pk(conn: AsyncConnection, account: sa.Table, slug: str) -> tuple[int, str]:
    found = (
        await conn.execute(
            sa.select(account.c.id, account.c.id_random).where(account.c.slug == slug)
        )
    ).first()
    if found is None:
        raise OpsError(f"no account with the slug {slug!r}")
    return int(found[0]), str(found[1])


_LINE_ENCODER = msgspec.json.Encoder()


async def _write_rows(
    conn: AsyncConnection, tables: list[sa.Table], pk: int, target: Path
) -> tuple[dict[str, int], set[str]]:
    """Stream the account's rows to `target` as JSON lines; counts per table, blob hashes."""
    public: dict[str, dict[int, str]] = {}
    counts: dict[str, int] = {}
    blobs: set[str] = set()
    with target.open("wb") as out:  # a local file, written between queries
        for table in tables:
            refs = _references(table)
            scope = table.c.id == pk if table.name == ACCOUNT_TABLE else table.c.account_id == pk
            name = str(table.name)  # a plain str: msgspec encodes no str subclass
            ids = public.setdefault(name, {})
            counts[name] = 0
            result = await conn.stream(sa.select(table).where(scope).order_by(table.c.id))
            async for row in result.mappings():
                values = {str(k): v for k, v in row.items() if k not in ("id", "account_id")}
                ids[int(row["id"])] = str(row["id_random"])
                for column, target_table in refs.items():
                    if values[column] is not None:
                        try:
                            values[column] = public[target_table][int(values[column])]
                        except KeyError:
                            raise OpsError(
                                f"{table.name} {row['id_random']} refers to a {target_table} "
                                "outside the account"
                            ) from None
                if table.name == "file":
                    blobs.add(str(row["sha256"]))
                out.write(_LINE_ENCODER.encode(_Line(name, values)) + b"\n")
                counts[name] += 1
    return counts, blobs


async def export_account(
    settings: Settings, slug: str, output_dir: Path, *, show_progress: bool | None = None
) -> ExportResult:
    """Write one account's rows and blobs into an archive in `output_dir`."""
    _, all_tables = build_registry(settings)
    tables = account_tables(all_tables)
    store = open_blob_store(settings)
    await asyncio.to_thread(output_dir.mkdir, parents=True, exist_ok=True)
    sqlite = dialect_name(settings.database_url) == "sqlite"
    engine = create_engine(unlimited(settings), sqlite_begin=not sqlite)  # a big account
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".aether-export-") as work:
        rows_path = Path(work) / ROWS
        try:
            async with engine.connect() as plain:  # one snapshot throughout, writers go on
                if sqlite:  # a deferred read transaction: one WAL snapshot, no write lock
                    conn = plain
                    await conn.exec_driver_sql("BEGIN")
                else:
                    conn = await plain.execution_options(isolation_level="REPEATABLE READ")
                revision = await _revision(conn)
                pk, public_id = await _account_pk(conn, all_tables[ACCOUNT_TABLE], slug)
                counts, shas = await _write_rows(conn, tables, pk, rows_path)
                await conn.rollback()
        finally:
            await engine.dispose()
        sizes: dict[str, int] = {}
        for sha in sorted(shas):
            try:
                sizes[sha] = await store.size(sha)
            except NotFoundError:
                raise OpsError(f"blob {sha} of the account is missing from the store") from None
        rows_sha, rows_size = await asyncio.to_thread(hash_file, rows_path)
        manifest = ExportManifest(
            created_at=dt.datetime.now(dt.UTC).isoformat(),
            aether_version=aether_version(),
            revision=revision,
            account=slug,
            account_id=public_id,
            rows=Member(ROWS, rows_size, rows_sha),
            tables=counts,
            blobs=sizes,
        )
        target = archive_path(output_dir, f"export-{slug}")
        total = rows_size + sum(sizes.values())
        with progress_bar("export", total, enabled=show_progress) as bar:

            def write(loop: asyncio.AbstractEventLoop) -> Path:
                return write_atomically(
                    target, lambda temp: _write_export(temp, manifest, rows_path, store, loop, bar)
                )

            await in_thread_with_loop(write)
    return ExportResult(str(target), slug, sum(counts.values()), len(sizes))


async def _revision(conn: AsyncConnection) -> str:
    rows = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars()
    revision = ",".join(sorted(str(r) for r in rows))
    if not revision:
        raise OpsError("the database is not migrated")
    return revision


def _write_export(
    temp: Path,
    manifest: ExportManifest,
    rows_path: Path,
    store: BlobStore,
    loop: asyncio.AbstractEventLoop,
    advance: Advance,
) -> None:
    with tarfile.open(temp, "w", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, MANIFEST, msgspec.json.format(msgspec.json.encode(manifest)))
        with rows_path.open("rb") as handle:
            tar.addfile(tar_info(ROWS, manifest.rows.size), HashingReader(handle, advance))
        for sha, size in manifest.blobs.items():
            write_blob_member(tar, store, sha, size, loop, advance)


# -- import --------------------------------------------------------------------------------


def _decoder(column: sa.Column[Any]) -> Any:
    """How a JSON value of `column` becomes what the column takes (None: as it is)."""
    kind = column.type
    if isinstance(kind, sa.types.TypeDecorator):
        kind = kind.impl_instance
    if isinstance(kind, sa.DateTime):
        return dt.datetime.fromisoformat
    if isinstance(kind, sa.Date):
        return dt.date.fromisoformat
    return None


def _read_lines(path: Path) -> Iterator[_Line]:
    decoder = msgspec.json.Decoder(_Line)
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                yield decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise OpsError(f"{ROWS} line {number} is not a row: {exc}") from None


def _load_rows(path: Path, tables: dict[str, sa.Table]) -> dict[str, list[dict[str, Any]]]:
    """The archive's rows per table, values turned back into Python values and checked."""
    by_table: dict[str, list[dict[str, Any]]] = {}
    decoders: dict[str, dict[str, Any]] = {}
    for line in _read_lines(path):
        table = tables.get(line.table)
        if table is None or (line.table != ACCOUNT_TABLE and "account_id" not in table.c):
            raise OpsError(f"the archive holds rows of {line.table!r}, not an account's table")
        columns = decoders.setdefault(
            table.name, {c.name: _decoder(c) for c in table.c if c.name not in ("id", "account_id")}
        )
        unknown = set(line.row) - set(columns)
        if unknown or "id_random" not in line.row:
            what = f"unknown column(s) {sorted(unknown)}" if unknown else "no id_random"
            raise OpsError(f"a {table.name} row in the archive has {what}")
        row = dict(line.row)
        for name, decode in columns.items():
            if decode is not None and isinstance(row.get(name), str):
                try:
                    row[name] = decode(row[name])
                except ValueError:
                    raise OpsError(f"{table.name}.{name} holds {row[name]!r}") from None
        by_table.setdefault(table.name, []).append(row)
    accounts = by_table.get(ACCOUNT_TABLE, [])
    if len(accounts) != 1:
        raise OpsError(f"the archive holds {len(accounts)} account rows, not one")
    return by_table


async def _check_free(
    conn: AsyncConnection, tables: dict[str, sa.Table], rows: dict[str, list[dict[str, Any]]]
) -> None:
    account = tables[ACCOUNT_TABLE]
    slug = rows[ACCOUNT_TABLE][0]["slug"]
    taken = await conn.execute(sa.select(account.c.id).where(account.c.slug == slug))
    if taken.first() is not None:
        raise OpsError(f"an account with the slug {slug!r} exists in this installation")
    for name, table_rows in rows.items():
        table = tables[name]
        ids = [r["id_random"] for r in table_rows]
        for start in range(0, len(ids), INSERT_BATCH):
            query = sa.select(table.c.id_random).where(
                table.c.id_random.in_(ids[start : start + INSERT_BATCH])
            )
            clash = (await conn.execute(query.limit(1))).scalar()
            if clash is not None:
                raise OpsError(f"{name} {clash} exists in this installation: imported already?")


async def _insert_rows(
    conn: AsyncConnection, tables: list[sa.Table], rows: dict[str, list[dict[str, Any]]]
) -> int:
    """Insert every row under new internal ids; references follow the public ids."""
    new_ids: dict[str, dict[str, int]] = {}
    account_pk = 0
    total = 0
    for table in tables:
        table_rows = rows.get(table.name, [])
        refs = _references(table)
        prepared = []
        for row in table_rows:
            values = dict(row)
            for column, target in refs.items():
                if values.get(column) is not None:
                    try:
                        values[column] = new_ids[target][values[column]]
                    except KeyError:
                        raise OpsError(
                            f"{table.name} {row['id_random']} refers to {target} "
                            f"{values[column]}, which the archive does not hold"
                        ) from None
            if table.name != ACCOUNT_TABLE:
                values["account_id"] = account_pk
            prepared.append(values)
        for start in range(0, len(prepared), INSERT_BATCH):
            await conn.execute(sa.insert(table), prepared[start : start + INSERT_BATCH])
        total += len(prepared)
        if table.name == ACCOUNT_TABLE:
            query = sa.select(table.c.id).where(table.c.id_random == prepared[0]["id_random"])
            account_pk = int((await conn.execute(query)).scalar_one())
            new_ids[table.name] = {prepared[0]["id_random"]: account_pk}
        elif table_rows:
            query = sa.select(table.c.id_random, table.c.id).where(table.c.account_id == account_pk)
            new_ids[table.name] = {str(r[0]): int(r[1]) for r in await conn.execute(query)}
    return total


async def import_account(
    settings: Settings, archive: Path, *, show_progress: bool | None = None
) -> ImportResult:
    """Load an export into this installation (see the module doc); all or nothing."""
    _, all_tables = build_registry(settings)
    tables = account_tables(all_tables)
    store = open_blob_store(settings)
    tar = open_archive(archive)
    engine = create_engine(unlimited(settings))
    created: list[str] = []
    try:
        manifest = read_manifest(tar, await next_member(tar), ExportManifest)
        check_revision(settings, manifest.revision)
        here = await current_revision(engine)
        if here != manifest.revision:
            raise OpsError(
                f"the archive is at schema revision {manifest.revision} and this database at "
                f"{here or 'none'}: bring both to the same revision (aether migrate) first"
            )
        with (
            tempfile.TemporaryDirectory(prefix="aether-import-") as work,
            progress_bar(
                "import", manifest.rows.size + sum(manifest.blobs.values()), enabled=show_progress
            ) as advance,
        ):
            member = await next_member(tar)
            if member is None:
                raise OpsError("the archive ends after its manifest")
            rows_path = Path(work) / ROWS
            await asyncio.to_thread(
                _extract_checked, tar, member, manifest.rows, rows_path, advance
            )
            rows = await asyncio.to_thread(_load_rows, rows_path, all_tables)
            async with engine.connect() as conn:
                await _check_free(conn, all_tables, rows)
            await bind_blob_store(engine, all_tables["system_setting"], store)
            await _import_blobs(tar, manifest, store, advance, created)
            async with engine.begin() as conn:
                total = await _insert_rows(conn, tables, rows)
    except BaseException:
        await _discard(engine, all_tables["file"], store, created)
        raise
    finally:
        tar.close()
        await engine.dispose()
    account = rows[ACCOUNT_TABLE][0]
    return ImportResult(str(account["slug"]), str(account["id_random"]), total, len(manifest.blobs))


async def _import_blobs(
    tar: tarfile.TarFile,
    manifest: ExportManifest,
    store: BlobStore,
    advance: Advance,
    created: list[str],
) -> None:
    seen: set[str] = set()
    while (member := await next_member(tar)) is not None:
        sha = sha_of_member(member.name)
        if sha is None or sha not in manifest.blobs or not member.isfile():
            raise OpsError(f"the archive holds {member.name}, which its manifest does not list")
        handle: IO[bytes] | None = tar.extractfile(member)
        assert handle is not None  # a regular file
        if await put_blob(store, sha, manifest.blobs[sha], read_member_chunks(handle, advance)):
            created.append(sha)
        seen.add(sha)
    if set(manifest.blobs) - seen:
        raise OpsError("the archive lacks blobs its manifest lists")


async def _discard(engine: Any, file: sa.Table, store: BlobStore, created: list[str]) -> None:
    """After a failed import, remove the blobs it added that no `file` row names."""
    if not created:
        return
    try:
        async with engine.connect() as conn:
            query = sa.select(file.c.sha256).where(file.c.sha256.in_(created)).distinct()
            kept = set((await conn.execute(query)).scalars())
    except Exception:  # the database cannot say: leave them to gc-blobs
        return
    for sha in created:
        if sha not in kept:
            await store.delete(sha)
