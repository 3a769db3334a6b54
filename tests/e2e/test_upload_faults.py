"""Uploads that die half-way: the server killed, or the client gone. Nothing half-written stays.

A real `aether serve` receives a slow streamed upload. SIGKILL mid-stream, then a restart:
no `file` or `event_file` row exists, and `aether gc-blobs` leaves the store holding exactly
the blobs the rows reference. A client that disconnects mid-stream leaves no row, no blob and
no temporary file, and the server stays healthy.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import AetherEnv, ServerProcess

pytestmark = pytest.mark.e2e

CHUNK = b"x" * (256 * 1024)


def _blob_files(root: Path) -> set[str]:
    return {p.name for p in root.glob("??/??/*") if p.is_file()}


def _temp_files(root: Path) -> list[Path]:
    return list((root / ".tmp").glob("*")) if (root / ".tmp").exists() else []


def _setup(env: AetherEnv) -> tuple[ServerProcess, dict[str, str], str]:
    env.cli("migrate")
    account = env.create_account("faults")
    server = env.serve()
    headers = {"X-API-Key": account["api_key"]}
    with server.client(headers=headers) as client:
        r = client.post(
            "/v3/crud/event", json={"name": "Faults", "starts_at": "2027-01-01T10:00:00Z"}
        )
        assert r.status_code == 201, r.text
    return server, headers, r.json()["id"]


def _counts(server: ServerProcess, headers: dict[str, str]) -> tuple[int, int]:
    with server.client(headers=headers) as client:
        files = client.get("/v3/crud/file?count=true&limit=1").json()["total"]
        links = client.get("/v3/crud/event_file?count=true&limit=1").json()["total"]
    return int(files), int(links)


def _slow_upload(stop: threading.Event) -> Iterator[bytes]:
    boundary = "faultboundary"
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for _ in range(400):  # ~100 MiB at most; the test cuts it long before
        if stop.is_set():
            return
        yield CHUNK
        time.sleep(0.02)


def _start_upload(
    server: ServerProcess, headers: dict[str, str], event_id: str
) -> tuple[threading.Thread, threading.Event, list[Any]]:
    stop = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        try:
            with httpx.Client(timeout=30) as client:
                r = client.post(
                    f"{server.base_url}/v3/action/event/{event_id}/upload",
                    content=_slow_upload(stop),
                    headers={
                        **headers,
                        "Content-Type": "multipart/form-data; boundary=faultboundary",
                    },
                )
                outcome.append(r.status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, stop, outcome


def _wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigkill_mid_upload_leaves_no_rows_and_gc_restores_the_store(e2e_env: AetherEnv) -> None:
    blob_root = Path(e2e_env.env["AE_BLOB_DIR"])
    server, headers, event_id = _setup(e2e_env)
    kept = b"committed before the crash\n"
    with server.client(headers=headers) as client:
        r = client.post(
            f"/v3/action/event/{event_id}/upload", files={"file": ("kept.txt", kept, "text/plain")}
        )
        assert r.status_code == 201, r.text
    assert _blob_files(blob_root) == {hashlib.sha256(kept).hexdigest()}

    thread, stop, _ = _start_upload(server, headers, event_id)
    _wait_for(lambda: any(p.stat().st_size > 1024 * 1024 for p in _temp_files(blob_root)))
    server.proc.kill()  # SIGKILL: no cleanup of any kind runs
    server.proc.wait(10)
    stop.set()
    thread.join(30)

    restarted = e2e_env.serve()
    assert _counts(restarted, headers) == (1, 1)
    assert _temp_files(blob_root), "the killed upload's temporary file is the garbage to collect"
    done = e2e_env.cli("gc-blobs", "--grace", "0")
    assert "temporary file" in done.stdout
    assert _blob_files(blob_root) == {hashlib.sha256(kept).hexdigest()}
    assert _temp_files(blob_root) == []
    with restarted.client(headers=headers) as client:  # the kept file is still served
        r = client.get(f"/v3/action/blob/{hashlib.sha256(kept).hexdigest()}")
        assert r.status_code == 200 and r.content == kept


def test_client_disconnect_mid_upload_keeps_nothing(e2e_env: AetherEnv) -> None:
    blob_root = Path(e2e_env.env["AE_BLOB_DIR"])
    server, headers, event_id = _setup(e2e_env)
    head = (
        f"POST /v3/action/event/{event_id}/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-API-Key: {headers['X-API-Key']}\r\n"
        "Content-Type: multipart/form-data; boundary=b0\r\nContent-Length: 50000000\r\n\r\n"
        '--b0\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n\r\n'
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        for _ in range(12):
            sock.sendall(CHUNK)
        _wait_for(lambda: bool(_temp_files(blob_root)))
    # the socket is closed half-way through the declared body
    _wait_for(lambda: not _temp_files(blob_root))
    assert _blob_files(blob_root) == set()
    assert _counts(server, headers) == (0, 0)
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
