"""The pure parts of `engine.ops`: member names, manifest comparison, tool arguments, the
readers that hash what passes through them, and the progress bar's two modes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from engine.blobs import FileSystemBlobStore
from engine.ops.archive import (
    BlobFile,
    HashingReader,
    TableSummary,
    blob_member,
    describe_differences,
    sha_of_member,
    write_atomically,
)
from engine.ops.dumps import _mariadb_options, _pg_options
from engine.ops.progress import progress_bar

SHA = hashlib.sha256(b"x").hexdigest()


def test_blob_members_are_named_by_a_well_formed_hash_only() -> None:
    assert sha_of_member(blob_member(SHA)) == SHA
    for name in ("blobs/../etc/passwd", "blobs/" + SHA.upper(), SHA, "blobs/" + SHA[:-1], "x"):
        assert sha_of_member(name) is None


def test_differences_name_each_table_that_does_not_match() -> None:
    same = TableSummary(2, "a" * 64)
    expected = {"event": same, "file": TableSummary(1, "b" * 64), "user": same}
    found = {"event": same, "file": TableSummary(1, "c" * 64), "extra": same}
    assert describe_differences(expected, found) == [
        "table extra: not in the archive",
        "table file: same row count, different values",
        "table user: missing",
    ]
    assert describe_differences(expected, dict(expected)) == []


def test_the_mariadb_password_goes_to_a_private_option_file_never_to_argv(
    tmp_path: Path,
) -> None:
    url = make_url('mysql+asyncmy://app:s3cr"et\\x@db.example:3307/aether')
    options = _mariadb_options(url, tmp_path)
    assert options[0] == f"--defaults-extra-file={tmp_path / 'client.cnf'}"  # must be first
    assert "--host=db.example" in options and "--port=3307" in options
    assert not any("s3cr" in option for option in options)
    written = (tmp_path / "client.cnf").read_text()
    assert written == '[client]\npassword="s3cr\\"et\\\\x"\n'
    assert stat.S_IMODE(os.stat(tmp_path / "client.cnf").st_mode) == 0o600
    socket = _mariadb_options(make_url("mysql+asyncmy://root@/x?unix_socket=/run/m.sock"), tmp_path)
    assert "--socket=/run/m.sock" in socket and not any(o.startswith("--host") for o in socket)


def test_the_postgresql_password_goes_to_the_environment() -> None:
    options, env = _pg_options(make_url("postgresql+asyncpg://app:pw@pg:6432/aether"))
    assert options == ["--host=pg", "--port=6432", "--username=app", "--no-password"]
    assert env["PGPASSWORD"] == "pw"


def test_the_hashing_reader_counts_and_hashes_what_passes() -> None:
    seen: list[int] = []
    reader = HashingReader(io.BytesIO(b"hello world"), seen.append)
    assert reader.read(5) + reader.read() == b"hello world"
    assert reader.hash.hexdigest() == hashlib.sha256(b"hello world").hexdigest()
    assert reader.size == 11 and sum(seen) == 11


async def test_a_blob_file_reads_a_store_blob_from_a_worker_thread(tmp_path: Path) -> None:
    store = FileSystemBlobStore(tmp_path)
    data = os.urandom(600 * 1024)

    async def chunks():  # type: ignore[no-untyped-def]
        yield data

    stored = await store.put(chunks())
    loop = asyncio.get_running_loop()
    reader = await store.open(stored.sha256)

    def read_all() -> bytes:
        source = BlobFile(reader, loop)
        parts = []
        while part := source.read(100_000):
            parts.append(part)
        return b"".join(parts)

    assert await asyncio.to_thread(read_all) == data
    await reader.aclose()


def test_an_archive_appears_whole_and_private_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "a.tar"
    write_atomically(target, lambda temp: temp.write_bytes(b"done"))
    assert target.read_bytes() == b"done" and stat.S_IMODE(target.stat().st_mode) == 0o600

    def fail(temp: Path) -> None:
        temp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "b.tar", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]


def test_the_progress_bar_draws_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("backup", 100, enabled=False) as advance:
        advance(100)
    assert capsys.readouterr() == ("", "")
    with progress_bar("backup", 100) as advance:  # stderr is no terminal under pytest
        advance(50)
    assert capsys.readouterr() == ("", "")
    with progress_bar("backup", 100, enabled=True) as advance:
        advance(100)
    out, _ = capsys.readouterr()
    assert out == ""  # stdout stays for the command's result
