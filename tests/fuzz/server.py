"""A real `aether serve` process on a migrated SQLite database, for e2e tests and fuzzing.

`running_server(workdir)` migrates a fresh database with `aether migrate`, creates an
account with `aether create-account --json`, starts `aether serve` on a free port, waits
for `/readyz`, and yields the base URL and the owner API key; the process group is killed
on exit, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
AETHER = str(BIN / "aether")
STARTUP_SECONDS = 30
OWNER = ("--owner-email", "owner@fuzz.test", "--json")


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str
    env: dict[str, str]
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AE_")}
    env.update(
        AE_ENV="test",
        AE_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'aether.db'}",
        AE_BLOB_DIR=str(workdir / "blobs"),
        AE_RATE_LIMIT="100000/minute",
        AE_LOG_LEVEL="WARNING",
    )
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-3000:]}")
    return done.stdout


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"aether serve exited early: {log.read_text()[-3000:]}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(f"{url}/readyz", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"aether serve not ready after {STARTUP_SECONDS}s: {log.read_text()[-3000:]}"
    )


@contextlib.contextmanager
def running_server(workdir: Path) -> Iterator[Server]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = server_env(workdir)
    _run([AETHER, "migrate"], env, workdir)
    made = json.loads(
        _run(
            [AETHER, "create-account", "--name", "Fuzz", "--slug", "fuzz", *OWNER],
            env,
            workdir,
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [AETHER, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown reaches workers
        )
    try:
        _wait_ready(url, proc, log)
        yield Server(url=url, api_key=made["api_key"], env=env, log=log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
