"""End-to-end fixtures: real `aether` subprocesses on a fresh database each.

`AetherEnv` holds one isolated environment (database, blob dir, working dir) and runs CLI
commands in it; `AetherEnv.serve()` starts `aether serve` on a free port, waits for
`/healthz` and logs stdout/stderr to files. Every started server is stopped at teardown
(SIGTERM, then SIGKILL), however the test ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 45.0  # imports alone take seconds on a loaded two-core machine
CLI_TIMEOUT = 90.0
STOP_TIMEOUT = 5.0


def aether_argv() -> list[str]:
    """The `aether` console script beside this interpreter, else `python -m engine.cli`."""
    script = Path(sys.executable).parent / "aether"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "engine.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def clean_environ() -> dict[str, str]:
    """The parent's environment without any `AE_*` value, so a developer's config can't leak."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of `text` parsed as a JSON object (fails on anything else)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            value = json.loads(line)
            assert isinstance(value, dict), line
            out.append(value)
    return out


def account_args(slug: str) -> list[str]:
    return [
        "create-account", "--name", f"Tenant {slug}", "--slug", slug,
        "--owner-email", f"owner@{slug}.test", "--json",
    ]  # fmt: skip


def single_json(out: str) -> dict[str, Any]:
    """The one JSON object a `--json` command printed (nothing else may be on stdout)."""
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    value = json.loads(lines[0])
    assert isinstance(value, dict), out
    return value


def stop_process(proc: subprocess.Popen[Any]) -> int:
    """SIGTERM, wait, then SIGKILL; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    return int(proc.returncode)


@dataclass
class ServerProcess:
    """One running server: its port, process and captured output."""

    proc: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path
    files: list[IO[bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=15.0, **kwargs)

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_entries(self) -> list[dict[str, Any]]:
        return json_lines(self.stdout())

    def wait_for_log(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first stdout log entry matching `predicate`, polling (lines follow replies)."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.log_entries():
                if predicate(entry):
                    return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching log line in:\n{self.stdout()[-4000:]}")
            time.sleep(0.1)

    def stop(self) -> int:
        try:
            return stop_process(self.proc)
        finally:
            for handle in self.files:
                handle.close()

    def describe(self) -> str:
        out, err = self.stdout()[-3000:], self.stderr()[-3000:]
        return f"exit={self.proc.poll()}\nstdout:\n{out}\nstderr:\n{err}"


@dataclass
class AetherEnv:
    """An isolated Aether configuration: environment variables and a working directory."""

    workdir: Path
    env: dict[str, str]
    servers: list[ServerProcess] = field(default_factory=list)

    def with_env(self, **overrides: str | None) -> AetherEnv:
        """A copy sharing the workdir and server list, with variables set (None removes)."""
        env = dict(self.env)
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return AetherEnv(self.workdir, env, self.servers)

    def popen_cli(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*aether_argv(), *args],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli_many(
        self, *commands: Sequence[str], check: bool = True
    ) -> list[subprocess.CompletedProcess[str]]:
        """Run several `aether` commands at once and return their results in order.

        Concurrent SQLite writers are safe here: the engine uses WAL with a busy timeout and
        the driver opens a transaction only at its first write.
        """
        procs = [self.popen_cli(*args) for args in commands]
        done = []
        try:
            for args, proc in zip(commands, procs, strict=True):
                out, err = proc.communicate(timeout=CLI_TIMEOUT)
                if check:
                    assert proc.returncode == 0, f"aether {' '.join(args)} failed:\n{err}"
                done.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
        finally:
            for proc in procs:
                stop_process(proc)
        return done

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `aether ARGS` to completion; with `check`, a failure shows its stderr."""
        done = subprocess.run(
            [*aether_argv(), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"aether {' '.join(args)} failed:\n{done.stderr}"
        return done

    def cli_json(self, *args: str) -> dict[str, Any]:
        """`aether ARGS --json`, whose stdout must be exactly one JSON object."""
        return single_json(self.cli(*args, "--json").stdout)

    def create_account(self, slug: str) -> dict[str, Any]:
        """`aether create-account --json` for `slug`: account_id, user_id and api_key."""
        return single_json(self.cli(*account_args(slug)).stdout)

    def launch(
        self, argv: Sequence[str] | None = None, *, cwd: Path | None = None
    ) -> ServerProcess:
        """Start a server without waiting; `argv` may use `{port}` (default `aether serve`).

        Output files go to the workdir even when `cwd` (the process's directory) differs.
        """
        port = free_port()
        template = list(argv) if argv else [*aether_argv(), "serve", "--port", "{port}"]
        cmd = [part.replace("{port}", str(port)) for part in template]
        tag = f"server-{port}-{secrets.token_hex(3)}"
        out_path, err_path = self.workdir / f"{tag}.out", self.workdir / f"{tag}.err"
        out, err = out_path.open("wb"), err_path.open("wb")
        proc = subprocess.Popen(cmd, cwd=cwd or self.workdir, env=self.env, stdout=out, stderr=err)
        server = ServerProcess(proc, port, out_path, err_path, [out, err])
        self.servers.append(server)
        return server

    def serve(self, argv: Sequence[str] | None = None, *, cwd: Path | None = None) -> ServerProcess:
        """Start a server and wait until `/healthz` answers 200 (retrying a taken port)."""
        for _attempt in range(3):
            server = self.launch(argv, cwd=cwd)
            if wait_healthy(server):
                return server
            server.stop()
            if "address already in use" not in server.describe().lower():
                break
        raise AssertionError(f"server did not become healthy:\n{server.describe()}")

    def stop_all(self) -> None:
        errors = []
        for server in self.servers:
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
        self.servers.clear()
        if errors:
            raise errors[0]


def wait_healthy(server: ServerProcess, timeout: float = START_TIMEOUT) -> bool:
    """Poll `/healthz` until 200; False if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.TransportError):
                if client.get(server.base_url + "/healthz").status_code == 200:
                    return True
            time.sleep(0.1)
    return False


def make_env(database_url: str, root: Path, **extra: str) -> AetherEnv:
    """An environment for `database_url` with its own working and blob directories."""
    root.mkdir(parents=True, exist_ok=True)
    env = clean_environ()
    env.update(
        AE_ENV="test",
        AE_DATABASE_URL=database_url,
        AE_BLOB_DIR=str(root / "var" / "blobs"),
        AE_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return AetherEnv(root, env)


@contextlib.contextmanager
def aether_env(database_url: str, root: Path, **extra: str) -> Iterator[AetherEnv]:
    """`make_env`, stopping every server it started on exit."""
    made = make_env(database_url, root, **extra)
    try:
        yield made
    finally:
        made.stop_all()


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / ('aether_e2e_' + secrets.token_hex(4) + '.db')}"


@pytest.fixture
def e2e_env(tmp_path: Path) -> Iterator[AetherEnv]:
    """A fresh SQLite environment (unmigrated) for one test; its servers stop afterwards."""
    with aether_env(sqlite_url(tmp_path), tmp_path / "work") as made:
        yield made
