"""SIGTERM on a real `aether serve`: no new connections, in-flight requests finish, exit 0.

An upload is sent over a raw socket in two halves with the signal in between, so it is
surely in flight when the worker is told to stop; it must still be answered 201. A request
that outlasts `AE_SHUTDOWN_TIMEOUT` is cut, and the worker exits anyway.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import AetherEnv, ServerProcess, port_open

EVENT = {"name": "Drain", "starts_at": "2027-05-01T09:00:00Z"}
EXIT_WAIT = 30.0  # a bound for the test to give up, not a speed expectation


def prepared(env: AetherEnv, timeout: str) -> tuple[ServerProcess, str, str]:
    env.cli("migrate")
    key = env.create_account("drain")["api_key"]
    server = env.with_env(AE_SHUTDOWN_TIMEOUT=timeout).serve()
    with server.client() as client:
        made = client.post("/v3/crud/event", json=EVENT, headers={"X-API-Key": key})
        assert made.status_code == 201, made.text
    return server, key, made.json()["id"]


def upload_bytes(
    server: ServerProcess, key: str, event: str, payload: bytes
) -> tuple[bytes, bytes]:
    """The raw head and body of an upload request (Connection: close)."""
    request = httpx.Request(
        "POST",
        f"{server.base_url}/v3/action/event/{event}/upload",
        files=[("file", ("big.bin", payload, "application/octet-stream"))],
        headers={"X-API-Key": key, "Connection": "close"},
    )
    body = request.read()
    lines = [f"POST {request.url.raw_path.decode()} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def wait_closed(port: int) -> bool:
    deadline = time.monotonic() + EXIT_WAIT
    while time.monotonic() < deadline:
        if not port_open(port):
            return True
        time.sleep(0.05)
    return False


def test_sigterm_finishes_an_upload_in_flight(e2e_env: AetherEnv) -> None:
    server, key, event = prepared(e2e_env, "20")
    head, body = upload_bytes(server, key, event, b"\x00drain" * 100_000)
    half = len(body) // 2
    with socket.create_connection(("127.0.0.1", server.port), timeout=EXIT_WAIT) as sock:
        sock.sendall(head + body[:half])
        time.sleep(0.5)  # the server is now reading the body
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_log(lambda e: "shutdown begun" in e.get("msg", ""))
        assert wait_closed(server.port), "the worker still accepts connections"
        sock.sendall(body[half:])
        assert read_status(sock) == 201
    # uvicorn re-raises the signal once it has shut down cleanly: exit by SIGTERM, not a crash.
    assert server.proc.wait(EXIT_WAIT) in (0, -signal.SIGTERM), server.describe()
    assert "Application shutdown complete" in server.stdout()
    statuses = [
        e.get("status") for e in server.log_entries() if e.get("path", "").endswith("/upload")
    ]
    assert statuses == [201], server.describe()


def test_a_request_past_the_shutdown_timeout_is_cut(e2e_env: AetherEnv, tmp_path: Path) -> None:
    server, key, event = prepared(e2e_env, "1")
    head, body = upload_bytes(server, key, event, b"never finished" * 10_000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=EXIT_WAIT) as sock:
        sock.sendall(head + body[:1000])  # and never the rest
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit:\n{server.describe()}") from None
    assert (
        any("graceful shutdown exceeded" in line for line in server.stdout().splitlines())
        or "graceful shutdown exceeded" in server.stderr()
    ), server.describe()
