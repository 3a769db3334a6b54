"""`make bench`: a real `aether serve` on a fresh SQLite database, measured over loopback.

Seeds one account with events, sessions and people, then runs each scenario with a fixed
number of requests at a fixed concurrency and prints requests per second and latency
percentiles. Numbers are for comparing commits on the same machine, not absolutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

REQUESTS = int(os.environ.get("AE_BENCH_REQUESTS", "400"))
CONCURRENCY = int(os.environ.get("AE_BENCH_CONCURRENCY", "8"))
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _aether(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [str(BIN / "aether"), *args], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout


async def _measure(name: str, call: Callable[[], Awaitable[httpx.Response]]) -> None:
    latencies: list[float] = []
    errors = 0
    queue = iter(range(REQUESTS))

    async def worker() -> None:
        nonlocal errors
        for _ in queue:
            started = time.perf_counter()
            response = await call()
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code >= 400:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"{name:<28} {REQUESTS / elapsed:8.0f} req/s   p50 {statistics.median(latencies):6.1f} ms"
        f"   p99 {p99:6.1f} ms   errors {errors}"
    )


async def _scenarios(base: str, key: str) -> None:
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        events = []
        for i in range(50):
            r = await client.post(
                "/v3/crud/event",
                json={"name": f"Event {i}", "starts_at": "2027-01-01T10:00:00Z", "code": f"E{i}"},
            )
            events.append(r.json()["id"])
            for s in range(3):
                await client.post(
                    f"/v3/crud/event/{events[-1]}/event_session",
                    json={"title": f"S{s}", "starts_at": "2027-01-01T11:00:00Z"},
                )
        event = events[0]
        await _measure("GET /healthz", lambda: client.get("/healthz"))
        await _measure("GET event by id", lambda: client.get(f"/v3/crud/event/{event}"))
        await _measure(
            "GET nested session list",
            lambda: client.get(f"/v3/crud/account/{_acct}/event/{event}/event_session"),
        )
        await _measure("GET event list (50)", lambda: client.get("/v3/crud/event?limit=50"))
        body = {
            "filter": {"_or": [{"name": {"_icontains": "event 1"}}, {"code": "E2"}]},
            "include": ["event_session"],
            "count": True,
        }
        await _measure(
            "POST search + include", lambda: client.post("/v3/crud/event/search", json=body)
        )
        n = iter(range(10**9))
        await _measure(
            "POST create session",
            lambda: client.post(
                f"/v3/crud/event/{event}/event_session",
                json={"title": f"T{next(n)}", "starts_at": "2027-01-01T11:00:00Z"},
            ),
        )


_acct = ""


def main() -> None:
    global _acct
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "AE_ENV": "test",
            "AE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/bench.db",
            "AE_BLOB_DIR": f"{tmp}/blobs",
            "AE_RATE_LIMIT": "1000000/minute",
            "AE_LOG_LEVEL": "WARNING",
        }
        _aether(env, "migrate")
        made = json.loads(
            _aether(
                env,
                "create-account",
                "--name",
                "Bench",
                "--slug",
                "bench",
                "--owner-email",
                "b@bench.test",
                "--json",
            )
        )
        _acct = made["account_id"]
        port = _free_port()
        server = subprocess.Popen(
            [str(BIN / "aether"), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    if httpx.get(base + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            print(f"{REQUESTS} requests per scenario, concurrency {CONCURRENCY}, SQLite")
            asyncio.run(_scenarios(base, made["api_key"]))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
