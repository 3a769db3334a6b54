"""The `aether` command fails in one line: no traceback, a non-zero exit, nothing left behind.

Each case runs the real console script in its own environment; commands that reach a
database are given a missing, an unmigrated or an unreachable one.
"""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import AetherEnv, account_args, aether_argv, free_port, make_env

pytestmark = pytest.mark.e2e


def one_line_failure(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The single stderr line of a failed command, which must mention every `expected`."""
    assert done.returncode != 0, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    line = lines[0]
    assert line.startswith("aether: "), line
    for word in expected:
        assert word in line, line
    assert done.stdout == "", done.stdout
    return line


def quiet_env(root: Path, database_url: str) -> AetherEnv:
    return make_env(database_url, root, AE_LOG_LEVEL="WARNING")


def test_create_account_on_a_missing_sqlite_file_leaves_none_behind(tmp_path: Path) -> None:
    database = tmp_path / "missing.db"
    env = quiet_env(tmp_path / "work", f"sqlite+aiosqlite:///{database}")
    one_line_failure(env.cli(*account_args("acme"), check=False), "aether migrate")
    assert not database.exists()


def test_commands_on_an_unmigrated_database_say_to_migrate(tmp_path: Path) -> None:
    database = tmp_path / "empty.db"
    sqlite3.connect(database).close()
    env = quiet_env(tmp_path / "work", f"sqlite+aiosqlite:///{database}")
    done = env.cli_many(
        account_args("acme"),
        ["token", "--account", "acme", "--role", "owner"],
        ["create-api-key", "--system", "--name", "ops"],
        check=False,
    )
    for result in done:
        one_line_failure(result, "not migrated", "aether migrate")


def test_create_account_on_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres:secret@127.0.0.1:{free_port()}/nowhere"
    env = quiet_env(tmp_path / "work", url)
    line = one_line_failure(env.cli(*account_args("acme"), check=False), "cannot reach")
    assert "secret" not in line  # the password is never printed


def test_token_refuses_a_ttl_below_one_second(tmp_path: Path) -> None:
    env = quiet_env(tmp_path / "work", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    for ttl in ("-5", "0"):
        args = ["token", "--account", "acme", "--role", "owner", "--ttl", ttl]
        one_line_failure(env.cli(*args, check=False), "--ttl")
    assert not (tmp_path / "x.db").exists()  # refused before touching the database


def test_routes_into_a_closed_pipe_is_one_line(tmp_path: Path) -> None:
    """`aether routes | head -1`, with `head` gone before the first write (no race)."""
    env = quiet_env(tmp_path / "work", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            [*aether_argv(), "routes"],
            cwd=env.workdir,
            env=env.env,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    done.stdout = ""
    one_line_failure(done, "pipe")


def test_openapi_is_compact_in_a_pipe_and_indented_on_request(tmp_path: Path) -> None:
    env = quiet_env(tmp_path / "work", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    compact = env.cli("openapi").stdout
    assert len(compact.splitlines()) == 1
    indented = env.cli("openapi", "--indent").stdout
    assert indented.startswith('{\n  "')
    assert json.loads(indented) == json.loads(compact)
    assert env.cli("openapi", "--indent", "4").stdout.startswith('{\n    "')


def test_openapi_is_indented_on_a_terminal(tmp_path: Path) -> None:
    env = quiet_env(tmp_path / "work", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*aether_argv(), "openapi"], cwd=env.workdir, env=env.env, stdout=follower
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    assert text.startswith('{\n  "')
    assert json.loads(text)["openapi"].startswith("3.")


def test_a_database_behind_the_latest_revision_is_named(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('0123456789ab')")
    conn.close()
    env = quiet_env(tmp_path / "work", f"sqlite+aiosqlite:///{database}")
    args = ["create-api-key", "--system", "--name", "ops"]
    one_line_failure(env.cli(*args, check=False), "0123456789ab", "aether migrate")
