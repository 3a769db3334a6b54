"""The change feed under load: two real `aether serve` processes sharing Redis.

Run: `.venv/bin/python -m tests.bench.realtime` (Redis at AE_TEST_REDIS_URL, default
redis://127.0.0.1:6379/15). Prints:

- idle: the resident memory one worker gains holding N subscribed WebSocket connections;
- fan-out: the delay from sending a write to one worker until each of N subscribers (half on
  each worker) has its change, over several writes (p50, p99, max);
- slow consumer: a client that reads nothing while 2,000 changes (about 4 KiB each) are
  made is disconnected (1008 is sent; a client that reads nothing may never see it), and
  the worker's memory before and after.

Figures are for this machine and for comparing commits, not absolutes; nothing here asserts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
import websockets

N = int(os.environ.get("AE_BENCH_SUBSCRIBERS", "500"))
WRITES = int(os.environ.get("AE_BENCH_WRITES", "20"))
SLOW_CHANGES = 2_000
BIN = Path(sys.executable).parent
EVENT = {"name": "bench", "starts_at": "2026-06-01T09:00:00Z"}
# About 4 KiB a message: 2,000 of them (8 MiB) outgrow the kernel's socket buffers, which
# would otherwise hold small messages for a client that reads nothing.
BIG_EVENT = {**EVENT, "metadata": {"pad": "x" * 4000}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def aether(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "aether"), *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def serve(env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = (workdir / f"server-{port}.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "aether"), "serve", "--port", str(port)], env=env, cwd=workdir,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


async def connect(port: int, key: str, sid: str = "s", **kwargs: Any) -> Any:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/v3/realtime", additional_headers={"X-API-Key": key},
        max_size=None, **kwargs,
    )  # fmt: skip
    await ws.send(json.dumps({"type": "subscribe", "id": sid, "object": "event"}))
    while json.loads(await ws.recv())["type"] != "subscribed":
        pass
    return ws


async def idle(port: int, pid: int, key: str) -> list[Any]:
    before = rss_mib(pid)
    conns = []
    for start in range(0, N, 50):
        conns += await asyncio.gather(
            *(connect(port, key) for _ in range(start, min(N, start + 50)))
        )
    await asyncio.sleep(2)
    after = rss_mib(pid)
    print(f"idle: {N} subscribed connections on one worker: RSS {before:.1f} -> {after:.1f} MiB "
          f"(+{after - before:.1f} MiB, {1024 * (after - before) / N:.1f} KiB each)")  # fmt: skip
    return conns


async def fan_out(ports: tuple[int, int], key: str, conns: list[Any]) -> None:
    delays: list[float] = []

    async def wait_for(ws: Any, event_id: asyncio.Future[str], sent: float) -> float:
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "change" and message["id"] == await event_id:
                return time.perf_counter() - sent

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}") as client:
        for _ in range(WRITES):
            loop = asyncio.get_running_loop()
            made: asyncio.Future[str] = loop.create_future()
            sent = time.perf_counter()
            waits = [asyncio.create_task(wait_for(ws, made, sent)) for ws in conns]
            r = await client.post("/v3/crud/event", json=EVENT, headers={"X-API-Key": key})
            made.set_result(r.json()["id"])
            delays += await asyncio.gather(*waits)
    delays.sort()
    p = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))] * 1000  # noqa: E731
    print(f"fan-out: {len(conns)} subscribers on two workers x {WRITES} writes: "
          f"p50 {p(0.50):.0f} ms, p99 {p(0.99):.0f} ms, max {delays[-1] * 1000:.0f} ms, "
          f"mean {statistics.mean(delays) * 1000:.0f} ms")  # fmt: skip


def raw_subscriber(port: int, key: str) -> socket.socket:
    """A WebSocket client that, once subscribed, reads nothing at all (a plain socket, since
    client libraries keep reading into their own buffers)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        f"GET /v3/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\nX-API-Key: {key}\r\n\r\n".encode()
    )
    seen = b""
    while b"\r\n\r\n" not in seen:  # the 101 answer
        seen += sock.recv(1)
    payload = json.dumps({"type": "subscribe", "id": "s", "object": "event"}).encode()
    mask = secrets.token_bytes(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    seen = b""
    while b"subscribed" not in seen:  # read up to `subscribed`, then never again
        seen += sock.recv(1)
    while not seen.endswith(b"}"):
        seen += sock.recv(1)
    return sock


def read_frames(sock: socket.socket, limit: float) -> tuple[int, int | None]:
    """Read what the server sent until it closes: (text frames, close code or None)."""
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except (TimeoutError, ConnectionError):
        pass
    texts, code, i = 0, None, 0
    while i + 2 <= len(data):
        opcode, size = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if size == 126:
            size, i = int.from_bytes(data[i : i + 2]), i + 2
        elif size == 127:
            size, i = int.from_bytes(data[i : i + 8]), i + 8
        body, i = data[i : i + size], i + size
        if opcode == 1:
            texts += 1
            if texts == 1 and os.environ.get("AE_BENCH_SHOW_LOGS"):
                print("first message:", body[:300])
        elif opcode == 8 and len(body) >= 2:
            code = int.from_bytes(body[:2])
    return texts, code


async def slow_consumer(port: int, pid: int, key: str) -> None:
    sock = raw_subscriber(port, key)
    await asyncio.sleep(1)
    before = rss_mib(pid)
    started = time.perf_counter()
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:

        async def write() -> None:
            async with sem:
                await client.post("/v3/crud/event", json=BIG_EVENT, headers={"X-API-Key": key})

        await asyncio.gather(*(write() for _ in range(SLOW_CHANGES)))
    peak = rss_mib(pid)
    texts, code = await asyncio.to_thread(read_frames, sock, 15.0)
    sock.close()
    print(f"slow consumer: {SLOW_CHANGES} changes in {time.perf_counter() - started:.1f} s; "
          f"it got {texts} messages then close code {code}; "
          f"worker RSS {before:.1f} -> {peak:.1f} MiB")  # fmt: skip


async def run(ports: tuple[int, int], pids: tuple[int, int], key: str) -> None:
    conns = await idle(ports[1], pids[1], key)
    half = N // 2
    for ws in conns[half:]:
        await ws.close()
    conns = conns[:half]
    for start in range(0, N - half, 50):
        count = min(N - half, start + 50) - start
        conns += await asyncio.gather(*(connect(ports[0], key) for _ in range(count)))
    await fan_out(ports, key, conns)
    for ws in conns:
        await ws.close()
    await slow_consumer(ports[1], pids[1], key)


def main() -> None:
    url = os.environ.get("AE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AE_")}
        env.update(
            AE_ENV="test", AE_DATABASE_URL=f"sqlite+aiosqlite:///{work}/bench.db",
            AE_BLOB_DIR=str(work / "blobs"), AE_REDIS_URL=url, AE_LOG_LEVEL="WARNING",
            AE_RATE_LIMIT="1000000/minute", AE_API_JWT_KEY=secrets.token_hex(32),
        )  # fmt: skip
        aether(env, "migrate")
        slug = f"bench-{secrets.token_hex(3)}"
        made = json.loads(aether(env, "create-account", "--name", "Bench", "--slug", slug,
                                 "--owner-email", f"o@{slug}.test", "--json"))  # fmt: skip
        servers = [serve(env, work), serve(env, work)]
        try:
            ports = (servers[0][1], servers[1][1])
            pids = (servers[0][0].pid, servers[1][0].pid)
            asyncio.run(run(ports, pids, made["api_key"]))
            if os.environ.get("AE_BENCH_SHOW_LOGS"):
                for log in work.glob("server-*.log"):
                    print(log.read_text()[-3000:])
            cut = sum(log.read_text().count("messages behind") for log in work.glob("server-*.log"))
            print(f"connections the servers logged as cut off for falling behind: {cut}")
        finally:
            for proc, _ in servers:
                proc.terminate()
                proc.wait(10)
            client = redis.Redis.from_url(url)
            client.delete(f"ae:{{acct:{made['account_id']}}}:feed")
            client.close()


if __name__ == "__main__":
    main()
