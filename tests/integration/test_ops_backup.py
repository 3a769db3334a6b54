"""`aether backup`, `restore`, `export` and `import` on every backend, as an operator runs them.

The demo account (and a file uploaded through the API, larger than one blob chunk) is
backed up; the database is dropped and the blob directory deleted; the restore must bring
back every row (counts and a checksum per table, read here independently of the engine's
own manifest) and every blob. A second restore into the now non-empty target is refused
and changes nothing. An export loaded into a second installation that already holds
another account serves the same public ids and the same bytes, under new internal ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from engine.app import create_app
from engine.cli import main
from engine.runtime import build_runtime
from engine.settings import Settings
from tests.backends import fresh_database, server_urls, unavailable

pytestmark = pytest.mark.slow

UPLOADED = os.urandom(300 * 1024)  # more than one 256 KiB chunk of the blob store


@dataclass
class Installation:
    """One database and blob directory, and the environment the CLI runs with."""

    url: str
    blob_dir: Path

    def environ(self) -> dict[str, str]:
        return {"AE_ENV": "test", "AE_DATABASE_URL": self.url, "AE_BLOB_DIR": str(self.blob_dir)}

    def settings(self) -> Settings:
        return Settings(env="test", database_url=self.url, blob_dir=str(self.blob_dir))


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`await cli(inst, *args)`: run `aether ARGS` against `inst`; (status, stdout, stderr)."""

    async def run(inst: Installation, *args: str) -> tuple[int, str, str]:
        for key in [k for k in os.environ if k.startswith("AE_")]:
            monkeypatch.delenv(key)
        for key, value in inst.environ().items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        status = await asyncio.to_thread(main, list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run


async def table_rows(url: str) -> dict[str, tuple[int, str]]:
    """Every table's row count and a hash of its sorted rows, read with plain SQL."""
    engine = create_async_engine(make_url(url))
    found: dict[str, tuple[int, str]] = {}
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            quote = conn.dialect.identifier_preparer.quote
            for name in names:
                rows = (await conn.execute(sa.text(f"SELECT * FROM {quote(name)}"))).all()
                text = "\n".join(sorted(repr(tuple(row)) for row in rows))
                found[name] = (len(rows), hashlib.sha256(text.encode()).hexdigest())
    finally:
        await engine.dispose()
    return found


def blob_files(root: Path) -> dict[str, str]:
    """Every blob file under `root`: its name and the SHA-256 of its content."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and len(path.name) == 64 and ".tmp" not in path.parts:
            found[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


async def drop_database(backend: str, inst: Installation) -> None:
    """Drop the installation's database and make it again, empty (SQLite: delete the file)."""
    url = make_url(inst.url)
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            await asyncio.to_thread(Path(str(url.database) + suffix).unlink, missing_ok=True)
        return
    admin = create_async_engine(make_url(server_urls()[backend]), isolation_level="AUTOCOMMIT")
    name = url.database
    try:
        async with admin.connect() as conn:
            if backend == "mariadb":
                await conn.execute(sa.text(f"DROP DATABASE {name}"))
                await conn.execute(
                    sa.text(
                        f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                    )
                )
            else:
                await conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()


class Served:
    """An in-process app on an installation, called with one API key."""

    def __init__(self, inst: Installation, key: str) -> None:
        self.runtime = build_runtime(inst.settings())
        self.app = create_app(inst.settings(), runtime=self.runtime)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://aether.test",
            headers={"X-API-Key": key},
        )

    async def __aenter__(self) -> httpx.AsyncClient:
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.runtime.close()


async def load_demo(cli: Any, inst: Installation) -> str:
    """Migrate, load the demo account, upload one more file through the API; the key."""
    assert (await cli(inst, "migrate"))[0] == 0
    status, out, err = await cli(inst, "demo")
    assert status == 0, err
    key = out.strip()
    async with Served(inst, key) as client:
        events = (await client.get("/v3/crud/event", params={"limit": 1})).json()["data"]
        r = await client.post(
            f"/v3/action/event/{events[0]['id']}/upload",
            files=[("file", ("big.bin", UPLOADED, "application/octet-stream"))],
        )
        assert r.status_code == 201, r.text
    return key


async def downloads(inst: Installation, key: str) -> dict[str, bytes]:
    """Every file of the key's account, by public id, downloaded through the API."""
    async with Served(inst, key) as client:
        files = (await client.get("/v3/crud/file", params={"limit": 100})).json()["data"]
        found = {}
        for item in files:
            r = await client.get(f"/v3/action/download/{item['id']}")
            assert r.status_code == 200, r.text
            found[item["id"]] = r.content
    return found


CLIENT_TOOLS = {"mariadb": ("mariadb-dump", "mariadb"), "postgresql": ("pg_dump", "pg_restore")}


@pytest.fixture
async def installation(backend: str, tmp_path: Path) -> AsyncIterator[Installation]:
    for name in CLIENT_TOOLS.get(backend, ()):
        if shutil.which(name) is None:  # skipped with the reason; failed under CI
            unavailable(f"{name} (the {backend} client tools)", FileNotFoundError(name))
    async with fresh_database(backend, tmp_path) as url:
        yield Installation(url, tmp_path / "a" / "blobs")


async def test_backup_then_restore_into_a_dropped_database_brings_everything_back(
    cli: Any, backend: str, installation: Installation, tmp_path: Path
) -> None:
    key = await load_demo(cli, installation)
    rows_before = await table_rows(installation.url)
    blobs_before = blob_files(installation.blob_dir)
    files_before = await downloads(installation, key)
    assert rows_before["file"][0] == 3 and rows_before["event"][0] == 2
    assert len(blobs_before) == 3 and hashlib.sha256(UPLOADED).hexdigest() in blobs_before
    assert all(name == digest for name, digest in blobs_before.items())

    status, out, err = await cli(
        installation, "backup", "--output", str(tmp_path / "out"), "--json"
    )
    assert status == 0, err
    made = json.loads(out)
    archive = Path(made["path"])
    mode = (await asyncio.to_thread(archive.stat)).st_mode
    assert archive.name.startswith("aether-backup-")
    assert mode & 0o077 == 0  # it holds password and key hashes
    assert made["blobs"] == 3

    await drop_database(backend, installation)
    shutil.rmtree(installation.blob_dir)
    assert await table_rows(installation.url) == {}

    status, out, err = await cli(installation, "restore", str(archive), "--json")
    assert status == 0, err
    assert json.loads(out)["head"] is True
    assert await table_rows(installation.url) == rows_before
    assert blob_files(installation.blob_dir) == blobs_before
    assert await downloads(installation, key) == files_before

    # The target is not empty now: refused, and nothing changes.
    status, out, err = await cli(installation, "restore", str(archive))
    assert status == 1 and out == ""
    assert err.startswith("aether: the target is not empty") and err.count("\n") == 1
    assert await table_rows(installation.url) == rows_before
    # --force replaces it, and the result is the same.
    status, out, err = await cli(installation, "restore", str(archive), "--force")
    assert status == 0, err
    assert await table_rows(installation.url) == rows_before
    assert await downloads(installation, key) == files_before


def rewrite_manifest(archive: Path, target: Path, **changes: Any) -> Path:
    """A copy of `archive` whose manifest has `changes` applied."""
    with tarfile.open(archive) as source, tarfile.open(target, "w") as out:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest.update(changes)
                data = json.dumps(manifest).encode()
                member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    return target


def damage_member(archive: Path, target: Path, name_prefix: str) -> Path:
    """A copy of `archive` with one byte of the first member named `name_prefix*` flipped."""
    with tarfile.open(archive) as source, tarfile.open(target, "w") as out:
        done = False
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if not done and member.name.startswith(name_prefix):
                data = bytes([data[0] ^ 1]) + data[1:]
                done = True
            out.addfile(member, io.BytesIO(data))
    return target


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_restore_refuses_newer_or_damaged_archives_before_changing_anything(
    cli: Any, installation: Installation, tmp_path: Path
) -> None:
    await load_demo(cli, installation)
    status, out, err = await cli(installation, "backup", "--output", str(tmp_path / "out"))
    assert status == 0, err
    archive = Path(out.strip())
    target = Installation(
        f"sqlite+aiosqlite:///{tmp_path / 'target.db'}", tmp_path / "target" / "blobs"
    )

    newer = rewrite_manifest(archive, tmp_path / "newer.tar", revision="ffffffffffff")
    status, _, err = await cli(target, "restore", str(newer))
    assert status == 1
    assert "schema revision ffffffffffff" in err and "newer Aether" in err
    other_kind = rewrite_manifest(archive, tmp_path / "kind.tar", dialect="postgresql")
    status, _, err = await cli(target, "restore", str(other_kind))
    assert status == 1 and "same kind of database" in err
    status, _, err = await cli(target, "restore", str(tmp_path / "missing.tar"))
    assert status == 1 and "no archive at" in err
    assert not (tmp_path / "target.db").exists() and not target.blob_dir.exists()

    damaged_blob = damage_member(archive, tmp_path / "blob.tar", "blobs/")
    status, _, err = await cli(target, "restore", str(damaged_blob))
    assert status == 1 and "damaged" in err
    assert blob_files(target.blob_dir) == {}  # the damaged blob was not kept
    damaged_dump = damage_member(archive, tmp_path / "dump.tar", "database.")
    status, _, err = await cli(target, "restore", str(damaged_dump), "--force")
    assert status == 1 and "database.sqlite is damaged" in err


async def test_an_export_imported_elsewhere_serves_the_same_ids_and_bytes(
    cli: Any, backend: str, installation: Installation, tmp_path: Path
) -> None:
    key = await load_demo(cli, installation)
    files_before = await downloads(installation, key)
    async with Served(installation, key) as client:
        events_before = (
            await client.get("/v3/crud/event", params={"include": "event_session"})
        ).json()
    status, out, err = await cli(
        installation, "export", "--account", "demo", "--output", str(tmp_path / "out"), "--json"
    )
    assert status == 0, err
    exported = json.loads(out)
    assert exported["blobs"] == 3
    # Another export within the same second gets an archive of its own.
    status, again, err = await cli(
        installation, "export", "--account", "demo", "--output", str(tmp_path / "out"), "--json"
    )
    assert status == 0, err
    assert json.loads(again)["path"] != exported["path"]
    archives = await asyncio.to_thread(lambda: list((tmp_path / "out").glob("*.tar")))
    assert len(archives) == 2

    async with fresh_database(backend, tmp_path) as other_url:
        other = Installation(other_url, tmp_path / "b" / "blobs")
        assert (await cli(other, "migrate"))[0] == 0
        status, _, err = await cli(
            other,
            "create-account",
            "--name",
            "Other",
            "--slug",
            "other",
            "--owner-email",
            "o@o.test",
        )
        assert status == 0, err
        status, out, err = await cli(other, "import", exported["path"], "--json")
        assert status == 0, err
        assert json.loads(out)["account"] == "demo"

        # Same public ids and bytes, served by the second installation with the same key.
        assert await downloads(other, key) == files_before
        async with Served(other, key) as client:
            events_after = (
                await client.get("/v3/crud/event", params={"include": "event_session"})
            ).json()
        assert events_after == events_before
        # New internal ids: the account is not where it was in the first installation.
        query = "SELECT id FROM account WHERE slug = 'demo'"
        first = create_async_engine(make_url(installation.url))
        second = create_async_engine(make_url(other_url))
        try:
            async with first.connect() as a, second.connect() as b:
                assert (await a.execute(sa.text(query))).scalar() != (
                    await b.execute(sa.text(query))
                ).scalar()
        finally:
            await first.dispose()
            await second.dispose()

        # A second import of the same account is refused and writes nothing.
        rows = await table_rows(other_url)
        status, _, err = await cli(other, "import", exported["path"])
        assert status == 1 and "exists in this installation" in err
        assert await table_rows(other_url) == rows


async def until(condition: Any) -> None:
    for _ in range(3000):  # 30 s
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_a_backup_taken_while_rows_are_written_restores_to_its_own_manifest(
    cli: Any, backend: str, installation: Installation, tmp_path: Path
) -> None:
    """The dump and the manifest's counts and checksums come from one snapshot: a restore
    (which compares every table with the manifest) succeeds even with writes racing."""
    from engine.db import create_engine
    from engine.ops import backup, restore
    from models.base import Base, new_public_id, utcnow

    await load_demo(cli, installation)
    settings = installation.settings()
    writer = create_engine(settings, autocommit=True)
    event = Base.metadata.tables["event"]
    written = 0
    stop = asyncio.Event()

    async def write() -> None:
        nonlocal written
        async with writer.connect() as conn:
            account = (await conn.execute(sa.text("SELECT id FROM account"))).scalar_one()
            while not stop.is_set():
                now = utcnow()
                await conn.execute(
                    event.insert().values(
                        id_random=new_public_id(), account_id=account, name="racing",
                        status="draft", starts_at=now, timezone="UTC", metadata={},
                        created_at=now, updated_at=now, version=1,
                    )
                )  # fmt: skip
                written += 1
                await asyncio.sleep(0.002)

    task = asyncio.create_task(write())
    try:
        await until(lambda: written >= 5)
        made = await backup(settings, tmp_path / "out", show_progress=False)
        before = written
        await until(lambda: written >= before + 5)  # writes went on after the snapshot
    finally:
        stop.set()
        await task
        await writer.dispose()
    assert made.rows > 0 and written > before

    async with fresh_database(backend, tmp_path) as other_url:
        target = Installation(other_url, tmp_path / "restored" / "blobs")
        done = await restore(target.settings(), Path(made.path), show_progress=False)
        assert done.rows == made.rows
        restored_events = (await table_rows(other_url))["event"][0]
        assert 2 < restored_events < 2 + written  # some racing rows, not all of them
