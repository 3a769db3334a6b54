"""A real `aether serve` over TCP: health, problems, logs, request ids, CRUD, CLI credentials.

Most tests share one migrated SQLite server per module (made like `make run`: migrate,
demo, serve); the readiness test runs on every backend; start-up refusals and the 500
path start their own processes.
"""

from __future__ import annotations

import re
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.auth.api_keys import generate_api_key
from tests.e2e.conftest import (
    REPO_ROOT,
    AetherEnv,
    ServerProcess,
    account_args,
    aether_argv,
    aether_env,
    clean_environ,
    free_port,
    make_env,
    port_open,
    single_json,
    sqlite_url,
    stop_process,
    wait_healthy,
)

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
HEX_ID = re.compile(r"^[0-9a-f]{32}$")
EVENT = {"name": "E2E Gala", "starts_at": "2027-05-01T09:00:00Z", "code": "E2E-1"}


FAILING_APP_ARGV = [
    sys.executable, "-m", "uvicorn", "tests.e2e.failing_app:create", "--factory",
    "--port", "{port}",
]  # fmt: skip


#: Each case's environment under AE_ENV=production (None removes a variable).
WEAK_JWT_KEYS: dict[str, dict[str, str | None]] = {
    "missing": {"AE_API_JWT_KEY": None},
    "short": {"AE_API_JWT_KEY": "short-key"},
    "hs512-five-bytes": {"AE_API_JWT_KEY": "12345", "AE_JWT_ALGORITHMS": "HS512"},
    "hs512-under-64-bytes": {"AE_API_JWT_KEY": "k" * 63, "AE_JWT_ALGORITHMS": "HS512"},
}


class Refusals:
    """`aether serve` under AE_ENV=production with each weak key, started together.

    A thread polls each port while its process lives, so "never bound" is observed, not
    inferred. The `site` fixture starts this first so these start-ups overlap its own.
    """

    def __init__(self, env: AetherEnv) -> None:
        self.procs: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        self.bound: set[str] = set()
        for case, overrides in WEAK_JWT_KEYS.items():
            prod = env.with_env(AE_ENV="production", **overrides)
            port = free_port()
            proc = subprocess.Popen(
                [*aether_argv(), "serve", "--port", str(port)],
                cwd=prod.workdir,
                env=prod.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self.procs[case] = port, proc
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _watch(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            running = {case for case, (_, p) in self.procs.items() if p.poll() is None}
            if not running:
                return
            self.bound |= {case for case in running if port_open(self.procs[case][0])}
            time.sleep(0.05)

    def finish(self) -> dict[str, tuple[int, str, str]]:
        """Wait for every process (killing any still running) and return its outcome."""
        self.watcher.join(95)
        results: dict[str, tuple[int, str, str]] = {}
        for case, (_, proc) in self.procs.items():
            stop_process(proc)  # acts only on one that failed to exit by itself
            raw_out, raw_err = proc.communicate(timeout=10)
            results[case] = proc.returncode, raw_out.decode(), raw_err.decode()
        return results


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refusals]:
    root = tmp_path_factory.mktemp("production")
    run = Refusals(make_env(sqlite_url(root), root / "work"))
    try:
        yield run
    finally:
        run.finish()


@dataclass
class Site:
    """The shared servers, an account with an owner key, and CLI outputs gathered at start."""

    env: AetherEnv
    server: ServerProcess
    failing: ServerProcess  # tests/e2e/failing_app.py on the same database
    slug: str
    account: dict[str, Any]
    demo_key: str
    demo_again: str
    token_out: str
    system_key_out: str

    def owner(self) -> dict[str, str]:
        return {"X-API-Key": self.account["api_key"]}


@pytest.fixture(scope="module")
def site(refusals: Refusals, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Like `make run` (migrate, demo, serve), plus an account and the CLI credentials.

    Imports dominate every process's wall time, so the servers (which need no schema to
    start) launch first and independent commands run together. SQLite takes concurrent
    writers here: the driver begins a transaction at its first write and waits on the lock.
    """
    root = tmp_path_factory.mktemp("site")
    with aether_env(sqlite_url(root), root / "work") as env:
        server = env.launch()
        failing = env.launch(FAILING_APP_ARGV, cwd=REPO_ROOT)
        env.cli("migrate")
        slug = f"e2e-{secrets.token_hex(4)}"
        demo, made, system_key = env.cli_many(
            ["demo"],
            account_args(slug),
            ["create-api-key", "--system", "--name", "ops", "--json"],
        )
        demo_key, account = demo.stdout.strip(), single_json(made.stdout)
        token, demo_again = env.cli_many(["token", "--account", slug, "--role", "editor"], ["demo"])
        for started in (server, failing):
            assert wait_healthy(started), started.describe()
        yield Site(
            env,
            server,
            failing,
            slug,
            account,
            demo_key,
            demo_again.stdout,
            token.stdout,
            system_key.stdout,
        )


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert isinstance(body, dict)
    for key in ("type", "title", "status", "detail", "instance", "request_id"):
        assert key in body, (key, body)
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# -- health and readiness -------------------------------------------------------------------


def test_healthz(site: Site) -> None:
    with site.server.client() as client:
        r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["content-type"].startswith("application/json")


def test_readyz_turns_ready_after_migrate_without_restart(
    empty_database_url: str, backend: str, tmp_path: Path
) -> None:
    """The smoke test on every backend: an unmigrated database is 503, then 200 after migrate.

    Also: before the migration a request needing the database is 503, not 500.
    """
    unknown_key = {"X-API-Key": generate_api_key().key}  # well-formed: costs a key lookup
    with aether_env(empty_database_url, tmp_path / "work") as env:
        server = env.serve()
        with server.client() as client:
            before = client.get("/readyz")
            assert before.status_code == 503, before.text
            assert before.json()["status"] == "not ready"
            assert "retry-after" in before.headers
            unmigrated = client.get("/v3/crud/event", headers=unknown_key)
            env.cli("migrate")
            after = client.get("/readyz")
            assert after.status_code == 200, after.text
            assert after.json()["checks"]["database"] == "ok"
            # The key lookup now reaches real tables: an unknown key is a plain 401.
            assert_problem(client.get("/v3/crud/event", headers=unknown_key), 401)
        assert server.proc.poll() is None  # the same process answered throughout
    # Before the migration a request that needs a table is 503 with Retry-After, never 500.
    assert_problem(unmigrated, 503)
    assert "retry-after" in unmigrated.headers


# -- problems --------------------------------------------------------------------------------


def test_unknown_route_is_a_problem_404(site: Site) -> None:
    with site.server.client() as client:
        r = client.get("/nope")
    body = assert_problem(r, 404)
    assert body["instance"] == "/nope"
    assert body["type"].startswith("http")


def test_unknown_method_on_crud_path_is_405_with_allow(site: Site) -> None:
    with site.server.client() as client:
        routed = client.request("TRACE", "/v3/crud/event")
        engine_405 = client.put("/v3/crud/event", json=EVENT, headers=site.owner())
    assert_problem(routed, 405)
    assert "GET" in routed.headers["allow"]
    assert_problem(engine_405, 405)
    allowed = {m.strip() for m in engine_405.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed and "PUT" not in allowed


# -- logs and request ids --------------------------------------------------------------------


def test_stdout_is_json_lines_with_a_request_line(site: Site) -> None:
    request_id = f"e2e-log-{secrets.token_hex(6)}"
    with site.server.client() as client:
        r = client.get("/v3/crud/event", headers={**site.owner(), "X-Request-ID": request_id})
        assert r.status_code == 200, r.text
    line = site.server.wait_for_log(lambda e: e.get("request_id") == request_id)
    assert line["logger"] == "aether.access"
    assert line["method"] == "GET" and line["path"] == "/v3/crud/event"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
    assert line["account"] == site.account["account_id"]
    assert line["principal"].startswith("api_key:")
    entries = site.server.log_entries()  # parses every line: a non-JSON line fails here
    assert entries
    for entry in entries:
        assert {"ts", "level", "logger", "msg"} <= entry.keys(), entry
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entry["ts"]), entry
    assert site.server.stderr() == ""
    assert site.account["api_key"] not in site.server.stdout()  # keys are never logged


def test_request_id_is_echoed_or_generated(site: Site) -> None:
    with site.server.client() as client:
        sent = client.get("/nope", headers={"X-Request-ID": "trace-abc.123"})
        generated = client.get("/healthz")
        unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert sent.headers["x-request-id"] == "trace-abc.123"
    assert sent.json()["request_id"] == "trace-abc.123"
    assert HEX_ID.match(generated.headers["x-request-id"])
    assert HEX_ID.match(unsafe.headers["x-request-id"])  # not echoed into logs or headers


# -- the make-run flow and CRUD over HTTP ----------------------------------------------------


def test_demo_flow_lists_demo_events(site: Site) -> None:
    again = site.demo_again.strip()
    assert again == site.demo_key and again.startswith("ae_")
    key_file = Path(site.env.env["AE_BLOB_DIR"]).parent / "demo-api-key.txt"
    assert key_file.read_text().strip() == site.demo_key
    with site.server.client() as client:
        r = client.get("/v3/crud/event", headers={"X-API-Key": site.demo_key})
    assert r.status_code == 200, r.text
    names = {event["name"] for event in r.json()["data"]}
    assert {"Spring Gala", "Tech Summit"} <= names


def test_crud_round_trip_with_etags(site: Site) -> None:
    h = site.owner()
    with site.server.client() as client:
        created = client.post("/v3/crud/event", json=EVENT, headers=h)
        assert created.status_code == 201, created.text
        event = created.json()
        url = f"/v3/crud/event/{event['id']}"
        assert created.headers["location"] == url
        assert event["account_id"] == site.account["account_id"]
        etag = created.headers["etag"]

        read = client.get(url, headers=h)
        assert read.status_code == 200 and read.json() == event
        assert read.headers["etag"] == etag
        assert client.get(url, headers={**h, "If-None-Match": etag}).status_code == 304

        patched = client.patch(url, json={"venue": "Hall 9"}, headers={**h, "If-Match": etag})
        assert patched.status_code == 200, patched.text
        assert patched.json()["venue"] == "Hall 9" and patched.json()["version"] == 2
        new_etag = patched.headers["etag"]
        assert new_etag != etag

        stale = client.patch(url, json={"venue": "X"}, headers={**h, "If-Match": etag})
        assert_problem(stale, 412)
        stale_delete = client.delete(url, headers={**h, "If-Match": etag})
        assert_problem(stale_delete, 412)

        deleted = client.delete(url, headers={**h, "If-Match": new_etag})
        assert deleted.status_code == 204, deleted.text
        assert_problem(client.get(url, headers=h), 404)


# -- credentials from the command line -------------------------------------------------------


def test_cli_token_is_a_bearer_token(site: Site) -> None:
    out = site.token_out
    lines = out.splitlines()
    assert len(lines) == 1, out
    token = lines[0].strip()
    assert token.count(".") == 2
    bearer = {"Authorization": f"Bearer {token}"}
    with site.server.client() as client:
        listed = client.get("/v3/crud/event", headers=bearer)
        assert listed.status_code == 200, listed.text
        made = client.post("/v3/crud/event", json={**EVENT, "code": "TOK-1"}, headers=bearer)
        assert made.status_code == 201, made.text  # editor may write events
        assert made.json()["account_id"] == site.account["account_id"]
        denied = client.get("/v3/crud/api_key", headers=bearer)
        assert denied.status_code == 403, denied.text  # a known type, a role too low
        tampered = client.get("/v3/crud/event", headers={"Authorization": f"Bearer {token[:-2]}xx"})
        assert_problem(tampered, 401)


def test_cli_system_key_lists_accounts_but_not_tenant_data(site: Site) -> None:
    made = single_json(site.system_key_out)
    assert set(made) == {"id", "api_key"}
    h = {"X-API-Key": made["api_key"]}
    with site.server.client() as client:
        accounts = client.get("/v3/crud/account", headers=h)
        assert accounts.status_code == 200, accounts.text
        ids = {a["id"] for a in accounts.json()["data"]}
        assert site.account["account_id"] in ids and len(ids) >= 2  # and the demo account
        assert_problem(client.get("/v3/crud/event", headers=h), 403)


# -- production start-up refusal -------------------------------------------------------------


def test_production_refuses_weak_jwt_keys(refusals: Refusals) -> None:
    """Each weak key makes `aether serve` exit non-zero, naming the variable, never bound."""
    results = refusals.finish()
    assert set(results) == set(WEAK_JWT_KEYS)
    for case, (status, out, err) in results.items():
        assert status not in (0, -signal.SIGTERM, -signal.SIGKILL), (case, status, out, err)
        assert "AE_API_JWT_KEY" in err, (case, err)
        assert case not in refusals.bound, f"{case}: the port was bound"
        assert "Uvicorn running" not in out + err, case


def test_development_defaults_make_their_own_key_like_make_run(tmp_path: Path) -> None:
    """No AE_* variable at all (a clean clone's `make run`): the CLI and the server share a
    random key that `var/` keeps with mode 0600, and the tokens it signs are accepted."""
    work = tmp_path / "clone"
    work.mkdir()
    env = AetherEnv(work, clean_environ())
    try:
        server = env.launch()
        env.cli("migrate")
        slug = f"dev-{secrets.token_hex(4)}"
        env.create_account(slug)
        token = env.cli("token", "--account", slug, "--role", "viewer").stdout.strip()
        key_file = work / "var" / "jwt.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert len(key_file.read_text().strip()) >= 64
        assert wait_healthy(server), server.describe()
        with server.client() as client:
            r = client.get("/v3/crud/event", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
    finally:
        env.stop_all()


# -- an unexpected error ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_unexpected_error_is_a_bare_500(site: Site, method: str) -> None:
    server = site.failing
    request_id = f"e2e-boom-{secrets.token_hex(4)}"
    with server.client() as client:
        r = client.request(
            method, "/v3/action/boom", headers={**site.owner(), "X-Request-ID": request_id}
        )
    body = assert_problem(r, 500)
    assert body["request_id"] == request_id
    for leak in ("Traceback", "secret internals", "RuntimeError"):
        assert leak not in r.text
    logged = server.wait_for_log(
        lambda e: e.get("request_id") == request_id and "exc" in e and e["level"] == "error"
    )
    assert "Traceback" in logged["exc"] and "RuntimeError: secret internals" in logged["exc"]
    access = server.wait_for_log(
        lambda e: e.get("request_id") == request_id and e.get("logger") == "aether.access"
    )
    assert access["status"] == 500
    server.log_entries()  # uvicorn's own lines are JSON too under the factory
