"""A private S3-compatible server for the tests: `moto_server` (moto[server]) on a free port.

`start_s3(dir)` runs `python -m moto.server` on loopback and waits until it answers; the
session fixture `s3_server` in `tests/conftest.py` starts one per test process, and
`new_bucket` makes a bucket of a random name. Without moto installed the tests skip with
the reason (and fail under AE_TEST_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import importlib.util
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.redis_servers import die_with_parent, free_ports

START_TIMEOUT = 45.0
ACCESS_KEY, SECRET_KEY, REGION = "testing", "testing-secret", "us-east-1"


@dataclass
class S3Server:
    endpoint_url: str
    proc: subprocess.Popen[bytes]

    def env(self, bucket: str, prefix: str = "aether") -> dict[str, str]:
        """The variables that point a server process at `bucket` on this server."""
        return {
            "AE_BLOB_URL": f"s3://{bucket}/{prefix}",
            "AE_S3_ENDPOINT_URL": self.endpoint_url,
            "AE_S3_REGION": REGION,
            "AE_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "AE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def new_bucket(self) -> str:
        """A new, empty bucket (a plain path-style PUT: moto needs no signature)."""
        name = f"aether-t-{secrets.token_hex(6)}"
        r = httpx.put(f"{self.endpoint_url}/{name}", timeout=10.0)
        r.raise_for_status()
        return name

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def moto_missing() -> bool:
    return importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None


def start_s3(directory: Path) -> S3Server:
    """`moto_server` on a free loopback port, answering before this returns."""
    directory.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):
        (port,) = free_ports(1)
        log = (directory / f"moto-{port}.log").open("ab")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        server = S3Server(f"http://127.0.0.1:{port}", proc)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(server.endpoint_url + "/moto-api/", timeout=2.0).status_code < 500:
                    return server
            except httpx.TransportError:
                time.sleep(0.2)
        server.stop()  # exited (a taken port) or never answered: try another port
    raise RuntimeError(f"moto_server did not start; see {directory}")
