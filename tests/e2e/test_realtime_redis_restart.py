"""Redis stopped and started again under a live subscription (SPEC 6.5, section 9).

The servers share a private Redis (its own port and directory, append-only file on, so a
restart keeps the stream). While it is down every write still succeeds (no 5xx); the
changes made meanwhile could not be published, so the subscriber is told
`resync-required` once Redis is back, and a new subscription then sees new changes.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.backends import require_services
from tests.e2e.conftest import (
    aether_env,
    free_port,
    port_open,
    sqlite_url,
    stop_process,
    wait_healthy,
)
from tests.e2e.test_realtime import EVENT, post, recv, subscribe, ws_url

pytestmark = pytest.mark.e2e
REDIS_SERVER = shutil.which("redis-server")


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--appendonly", "yes", "--save", "", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if REDIS_SERVER is None:
        if require_services():
            pytest.fail("redis-server is not installed (needed under AE_TEST_REQUIRE_SERVICES)")
        print("skipping: no redis-server binary to start a private Redis")
        pytest.skip("redis-server is not installed")
    (tmp_path / "redis").mkdir()
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_subscription_survives_a_redis_restart_by_resyncing(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    slug = f"rr-{secrets.token_hex(4)}"
    with aether_env(sqlite_url(tmp_path), tmp_path / "work", AE_REDIS_URL=private_redis.url) as env:
        one, two = env.launch(), env.launch()
        env.cli("migrate")
        key = env.create_account(slug)["api_key"]
        for server in (one, two):
            assert wait_healthy(server), server.describe()
        async with websockets.connect(ws_url(two), additional_headers={"X-API-Key": key}) as ws:
            await subscribe(ws, "s", "event")
            before = post(one, key, "/v3/crud/event", {**EVENT, "name": "before"})
            first = await recv(ws)
            assert first["type"] == "change" and first["id"] == before["id"]

            private_redis.stop()
            statuses = []
            async with httpx.AsyncClient(base_url=one.base_url, timeout=15.0) as c:
                for i in range(5):
                    body = {**EVENT, "name": f"down {i}"}
                    r = await c.post("/v3/crud/event", json=body, headers={"X-API-Key": key})
                    statuses.append(r.status_code)
                    r = await c.get("/v3/crud/event", headers={"X-API-Key": key})
                    statuses.append(r.status_code)
            assert statuses and all(s < 500 for s in statuses), statuses
            private_redis.start()

            told = await recv(ws, 30.0)
            assert told["type"] == "error" and told["subscription"] == "s", told
            assert told["problem"]["status"] == 410
            assert told["problem"]["type"].endswith("resync-required")

            await subscribe(ws, "s", "event")  # afresh, after reloading
            after = post(one, key, "/v3/crud/event", {**EVENT, "name": "after"})
            got = await recv(ws, 15.0)
            assert got["type"] == "change" and got["id"] == after["id"]
