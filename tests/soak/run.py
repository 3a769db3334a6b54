"""`make soak`: nested reads under load, with writes and deletes going on (bounded, loopback).

Starts `aether serve --workers 2` on a fresh MariaDB database with Redis, seeds three
tenants (events, sessions, people, one uploaded file per event), then runs `--clients`
concurrent clients for `--duration` seconds. Each request uses an API key or a JWT of a
random role of its tenant and is one of: a nested GET two levels deep
(`/event/{e}/event_session/{s}`) or three (`/account/{a}/event/{e}/event_session/{s}`),
a nested list, a search, a download by event id, a create, a delete, a probe of another
tenant's object (404 expected) or a viewer's write (403 expected).

Every status is checked against what the request had to get; a 404 on a read is expected
only for a session whose delete had started before the read was answered. The report
gives requests, statuses, p50/p99 per kind and overall, timeouts, unexpected answers and
the id cache's hit rate (summed from each worker's stop log). Exit status 1 when anything
was unexpected.

    python -m tests.soak.run [--duration 180] [--clients 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
ROLES = ("viewer", "editor", "admin", "owner")
WRITERS = ("editor", "admin", "owner")
EVENTS_PER_TENANT = 8
SESSIONS_PER_EVENT = 4
TENANTS = ("soak-a", "soak-b", "soak-c")
REQUEST_TIMEOUT = 30.0
#: Share of each kind of request (the rest of the mix is nested reads).
MIX = (
    ("get2", 0.32),
    ("get3", 0.20),
    ("list2", 0.12),
    ("list3", 0.05),
    ("search", 0.05),
    ("download", 0.05),
    ("create", 0.09),
    ("delete", 0.06),
    ("foreign", 0.04),
    ("viewer_write", 0.02),
)
_ID_CACHE_RE = re.compile(r"id cache: (\d+) hits, (\d+) misses, (\d+) stale")


@dataclass
class Tenant:
    slug: str
    account: str
    creds: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    live: dict[str, list[str]] = field(default_factory=dict)  # event → its sessions
    deleted: set[str] = field(default_factory=set)  # deletes sent (or done)

    def cred(self, roles: tuple[str, ...] = ROLES) -> dict[str, str]:
        return random.choice(self.creds[random.choice(roles)])


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    timeouts: int = 0
    explained_404: int = 0

    def record(self, kind: str, status: int, ms: float, ok: bool, what: str) -> None:
        self.latencies[kind].append(ms)
        self.statuses[str(status)] += 1
        if not ok:
            self.unexpected.append(f"{kind} {status} {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aether(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "aether"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"aether {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def sign(key: str, account: str, role: str) -> str:
    """A token as `aether token` makes one (a subject that is no user keeps its role)."""
    from joserfc import jwt
    from joserfc.jwk import OctKey

    claims = {"sub": secrets.token_urlsafe(16), "acct": account, "role": role,
              "exp": int(time.time()) + 7200}  # fmt: skip
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(key.encode()))


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def session_body(n: int) -> dict[str, Any]:
    return {"title": f"Session {n}", "starts_at": "2027-03-14T10:00:00Z", "room": f"R{n % 7}"}


async def seed(
    client: httpx.AsyncClient, env: dict[str, str], events: int = EVENTS_PER_TENANT
) -> list[Tenant]:
    tenants = []
    for slug in TENANTS:
        made = json.loads(aether(env, "create-account", "--name", slug, "--slug", slug,
                                 "--owner-email", f"owner@{slug}.test", "--json"))  # fmt: skip
        tenant = Tenant(slug, made["account_id"])
        tenant.creds["owner"] = [{"X-API-Key": made["api_key"]}]
        owner = tenant.creds["owner"][0]
        for role in ROLES:
            if role != "owner":
                body = {"name": f"{role} soak", "role": role}
                key = await client.post("/v3/action/api_key", json=body, headers=owner)
                assert key.status_code == 201, key.text
                tenant.creds[role] = [{"X-API-Key": key.json()["key"]}]
            token = sign(env["AE_API_JWT_KEY"], tenant.account, role)
            tenant.creds[role].append({"Authorization": f"Bearer {token}"})
        for n in range(events):
            body = {"name": f"Event {n}", "starts_at": "2027-03-14T09:00:00Z", "code": f"E{n}"}
            event = (await client.post("/v3/crud/event", json=body, headers=owner)).json()["id"]
            tenant.events.append(event)
            tenant.live[event] = []
            for s in range(SESSIONS_PER_EVENT):
                r = await client.post(
                    f"/v3/crud/event/{event}/event_session", json=session_body(s), headers=owner
                )
                tenant.live[event].append(r.json()["id"])
            person = {"first_name": "P", "last_name": f"N{n}", "email": f"p{n}@{slug}.test"}
            await client.post(f"/v3/crud/event/{event}/event_person", json=person, headers=owner)
            files = [("file", (f"e{n}.txt", f"event {n} of {slug}\n".encode(), "text/plain"))]
            up = await client.post(f"/v3/action/event/{event}/upload", files=files, headers=owner)
            assert up.status_code == 201, up.text
        tenants.append(tenant)
    return tenants


async def one_request(
    client: httpx.AsyncClient, tenants: list[Tenant], results: Results, counter: list[int]
) -> None:
    kind = random.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
    tenant = random.choice(tenants)
    event = random.choice(tenant.events)
    sessions = tenant.live[event]
    if kind == "delete" and len(sessions) <= 2:
        kind = "create"
    if kind in ("get2", "get3") and not sessions:
        kind = "list2"
    session = random.choice(sessions) if sessions else ""
    expect: tuple[int, ...] = (200,)
    method, url, body = "GET", "", None
    headers = tenant.cred()
    if kind == "get2":
        url = f"/v3/crud/event/{event}/event_session/{session}"
    elif kind == "get3":
        url = f"/v3/crud/account/{tenant.account}/event/{event}/event_session/{session}"
    elif kind == "list2":
        url = f"/v3/crud/event/{event}/event_session?limit=20"
    elif kind == "list3":
        url = f"/v3/crud/account/{tenant.account}/event/{event}/event_person"
    elif kind == "search":
        method, url = "POST", "/v3/crud/event_session/search"
        body = {"filter": {"room": {"_in": ["R1", "R2"]}}, "limit": 10}
    elif kind == "download":
        url = f"/v3/action/download/{event}"
    elif kind == "create":
        method, url, expect = "POST", f"/v3/crud/event/{event}/event_session", (201,)
        counter[0] += 1
        body, headers = session_body(counter[0]), tenant.cred(WRITERS)
    elif kind == "delete":
        sessions.remove(session)
        tenant.deleted.add(session)  # before sending: readers may see it gone from now on
        method, expect = "DELETE", (204,)
        url, headers = f"/v3/crud/event/{event}/event_session/{session}", tenant.cred(WRITERS)
    elif kind == "foreign":
        other = random.choice([t for t in tenants if t is not tenant])
        foreign_event = random.choice(other.events)
        url, expect = f"/v3/crud/event/{foreign_event}/event_session", (404,)
    else:  # a viewer's write
        method, url, expect = "POST", f"/v3/crud/event/{event}/event_session", (403,)
        body, headers = session_body(0), random.choice(tenant.creds["viewer"])
    started = time.perf_counter()
    try:
        response = await client.request(method, url, json=body, headers=headers)
    except httpx.TimeoutException:
        results.timeouts += 1
        results.unexpected.append(f"{kind} timeout {url}")
        return
    ms = (time.perf_counter() - started) * 1000
    status = response.status_code
    ok = status in expect
    if not ok and status == 404 and kind in ("get2", "get3") and session in tenant.deleted:
        ok = True  # explained by a delete sent before this answer
        results.explained_404 += 1
    if kind == "create" and status == 201:
        sessions.append(response.json()["id"])
    results.record(kind, status, ms, ok, f"{url} {response.text[:200]}")


async def load(base_url: str, tenants: list[Tenant], clients: int, duration: float) -> Results:
    results = Results()
    deadline = time.monotonic() + duration
    counter = [1000]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=REQUEST_TIMEOUT, limits=limits
    ) as client:

        async def loop() -> None:
            while time.monotonic() < deadline:
                await one_request(client, tenants, results, counter)

        await asyncio.gather(*(loop() for _ in range(clients)))
    return results


def wait_ready(base_url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            if httpx.get(base_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")


def id_cache_totals(log: str) -> dict[str, int]:
    totals = Counter[str]()
    for match in _ID_CACHE_RE.finditer(log):
        totals.update(hits=int(match[1]), misses=int(match[2]), stale=int(match[3]))
    return dict(totals)


async def run_soak(
    database_url: str,
    redis_url: str,
    *,
    clients: int,
    duration: float,
    workers: int,
    work: Path,
    events: int = EVENTS_PER_TENANT,
) -> dict[str, Any]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AE_")}
    env.update(
        AE_ENV="test",
        AE_DATABASE_URL=database_url,
        AE_REDIS_URL=redis_url,
        AE_API_JWT_KEY=secrets.token_urlsafe(48),
        AE_BLOB_DIR=str(work / "blobs"),
        AE_RATE_LIMIT="100000000/minute",
        AE_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    aether(env, "migrate")
    log_path = work / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before the load)
            [str(BIN / "aether"), "serve", "--port", str(port), "--workers", str(workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work,
        )  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base_url, proc)
            async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT) as client:
                tenants = await seed(client, env, events)
            began = time.monotonic()
            results = await load(base_url, tenants, clients, duration)
            elapsed = time.monotonic() - began
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    server_log = log_path.read_text(errors="replace")
    all_ms = [ms for values in results.latencies.values() for ms in values]
    cache = id_cache_totals(server_log)
    lookups = cache.get("hits", 0) + cache.get("misses", 0)
    logged_5xx = len(re.findall(r'"status":5\d\d', server_log))
    return {
        "clients": clients,
        "workers": workers,
        "seconds": round(elapsed, 1),
        "requests": len(all_ms) + results.timeouts,
        "requests_per_second": round(len(all_ms) / elapsed, 1),
        "statuses": dict(sorted(results.statuses.items())),
        "timeouts": results.timeouts,
        "unexpected": len(results.unexpected),
        "unexpected_samples": results.unexpected[:20],
        "404_explained_by_a_delete": results.explained_404,
        "p50_ms": round(percentile(all_ms, 0.50), 1),
        "p99_ms": round(percentile(all_ms, 0.99), 1),
        "by_kind": {
            kind: {
                "n": len(values),
                "p50_ms": round(percentile(values, 0.50), 1),
                "p99_ms": round(percentile(values, 0.99), 1),
            }
            for kind, values in sorted(results.latencies.items())
        },
        "id_cache": {
            **cache,
            "hit_rate": round(cache.get("hits", 0) / lookups, 3) if lookups else None,
        },
        "server_logged_5xx": logged_5xx,
    }


async def main_async(args: argparse.Namespace) -> int:
    from tests.backends import fresh_database, redis_url

    with tempfile.TemporaryDirectory(prefix="aether-soak-") as tmp:
        work = Path(tmp)
        async with fresh_database("mariadb", work) as url:
            report = await run_soak(
                url,
                args.redis_url or redis_url(),
                clients=args.clients,
                duration=args.duration,
                workers=args.workers,
                work=work,
            )
    print(json.dumps(report, indent=2))
    bad = report["unexpected"] or report["timeouts"] or report["server_logged_5xx"]
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
