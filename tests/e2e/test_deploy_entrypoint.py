"""The container's entry point, run here as the image and the compose file configure it.

No container engine can pull a base image on this machine, so the image's command
(`ENTRYPOINT` + the compose service's `command`) runs directly, with the environment the
Dockerfile's `ENV` and compose.yaml's `environment` give it. Only what points outside this
machine is swapped: the database URL (compose's `mariadb` host becomes a fresh MariaDB
database here), the Redis URL, the blob volume's path, the port (a free one) and the JWT
key (deploy/.env's). The migration runs as compose's `migrate` service does; then
`/readyz` must answer 200 with the database and Redis both "ok".
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import (
    REPO_ROOT,
    START_TIMEOUT,
    aether_argv,
    clean_environ,
    free_port,
    stop_process,
)

pytestmark = pytest.mark.e2e

DOCKERFILE = (REPO_ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((REPO_ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8"))


def image_environment() -> dict[str, str]:
    """The `ENV` of the Dockerfile's last stage (continuation lines joined)."""
    last_stage = DOCKERFILE[DOCKERFILE.rindex("\nFROM ") :]
    text = last_stage.replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def image_command(service: dict[str, Any]) -> list[str]:
    """ENTRYPOINT plus the service's `command` (which replaces the image's CMD)."""
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", DOCKERFILE, flags=re.M)[1])  # type: ignore[index]
    return [*entrypoint, *service["command"]]


def interpolate(value: str, dotenv: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` against `dotenv`."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if dotenv.get(name):
            return dotenv[name]
        if op == ":?":
            raise AssertionError(f"compose would refuse to start: {name} unset ({rest})")
        return rest if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(:[-?])?([^}]*)\}", one, value)


def service_environment(name: str, dotenv: dict[str, str]) -> dict[str, str]:
    service = COMPOSE["services"][name]
    env = image_environment()
    env.update(dotenv)  # env_file: .env
    env.update({k: interpolate(str(v), dotenv) for k, v in service["environment"].items()})
    return env


def local_argv(argv: list[str]) -> list[str]:
    assert argv[0] == "aether"
    return [*aether_argv(), *argv[1:]]


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_the_image_command_with_its_environment_serves_readyz_against_mariadb_and_redis(
    empty_database_url: str, redis_test_url: str, tmp_path: Path
) -> None:
    dotenv = {  # what an operator's deploy/.env holds
        "MARIADB_PASSWORD": secrets.token_urlsafe(16),
        "MARIADB_ROOT_PASSWORD": secrets.token_urlsafe(16),
        "AE_API_JWT_KEY": secrets.token_urlsafe(48),
    }
    port = free_port()
    here = {  # what points outside this machine
        "AE_DATABASE_URL": empty_database_url,
        "AE_REDIS_URL": redis_test_url,
        "AE_BLOB_DIR": str(tmp_path / "blobs"),
        "AE_PORT": str(port),
    }
    api_env = service_environment("api", dotenv)
    assert api_env["AE_ENV"] == "production" and api_env["AE_WORKERS"] == "2"
    assert api_env["AE_DATABASE_URL"].startswith("mysql+asyncmy://aether:")
    assert api_env["AE_REDIS_URL"].startswith("redis://redis:")
    assert api_env["AE_BLOB_DIR"] == image_environment()["AE_BLOB_DIR"]

    migrate = COMPOSE["services"]["migrate"]
    migrate_env = {**clean_environ(), **service_environment("migrate", dotenv), **here}
    done = subprocess.run(
        local_argv(image_command(migrate)),
        cwd=tmp_path,
        env=migrate_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    out, err = (tmp_path / "api.out").open("wb"), (tmp_path / "api.err").open("wb")
    proc = subprocess.Popen(
        local_argv(image_command(COMPOSE["services"]["api"])),
        cwd=tmp_path,
        env={**clean_environ(), **api_env, **here},
        stdout=out,
        stderr=err,
    )
    try:
        ready = wait_ready(proc, f"http://127.0.0.1:{port}")
        assert ready is not None, (tmp_path / "api.err").read_text()[-3000:]
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    finally:
        stop_process(proc)
        out.close()
        err.close()
    logged = [json.loads(line) for line in (tmp_path / "api.out").read_text().splitlines() if line]
    assert any(entry.get("path") == "/readyz" for entry in logged)  # JSON lines on stdout


def wait_ready(proc: subprocess.Popen[bytes], base_url: str) -> httpx.Response | None:
    """Poll `/readyz` until 200 (or the process exits, or time runs out); the last answer."""
    deadline = time.monotonic() + START_TIMEOUT
    last = None
    with httpx.Client(timeout=3.0) as client:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                last = client.get(base_url + "/readyz")
            except httpx.TransportError:
                last = None
            if last is not None and last.status_code == 200:
                return last
            time.sleep(0.2)
    return last
