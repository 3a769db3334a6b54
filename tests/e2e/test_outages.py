"""Outages under a real `aether serve`: MariaDB down or hung, Redis down or hung (F1-F3).

Each dependency sits behind `tests/e2e/proxy.py`, so an outage is a proxy reset (dead
server: connections closed, new ones refused) or a blackhole (accepts, never answers, like
SIGSTOP). Pass criteria: 503 problem+json with Retry-After, bounded in time, never 500;
recovery without a restart; Redis outages cost no failed request at all.
"""

from __future__ import annotations

import contextlib
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from engine.cache import DEFAULT_COOLDOWN_SECONDS
from tests.e2e.conftest import AetherEnv, ServerProcess, aether_env, sqlite_url, wait_healthy
from tests.e2e.proxy import TcpProxy

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
DB_FAIL_BUDGET = 6.0  # F1: each request fails within the pool timeout plus connect slack
HANG_BUDGET = 15.0  # F2: a hung database still costs a bounded time
RECOVERY_BUDGET = 10.0
REDIS_BUDGET = 2.0  # F3: per request while Redis is away
CLIENT_TIMEOUT = 25.0  # above every budget, so a hang is measured rather than cut short
COOLDOWN_WAIT = DEFAULT_COOLDOWN_SECONDS + 0.3


@dataclass
class Site:
    env: AetherEnv
    server: ServerProcess
    proxy: TcpProxy
    key: dict[str, str]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, timeout=CLIENT_TIMEOUT)


@contextlib.contextmanager
def site_behind(
    database_url: str, root: Path, target: tuple[str, int], route: Callable[[str], dict[str, str]]
) -> Iterator[Site]:
    """Proxy `target`, then migrate, create an account and serve with `route(proxy_url)` set.

    The server launches first and the CLI runs meanwhile: imports dominate wall time.
    """
    with TcpProxy(*target) as proxy, aether_env(database_url, root) as base:
        env = base.with_env(**route(f"127.0.0.1:{proxy.port}"))
        server = env.launch()
        env.cli("migrate")
        account = env.create_account(f"out-{secrets.token_hex(4)}")
        assert wait_healthy(server), server.describe()
        yield Site(env, server, proxy, {"X-API-Key": account["api_key"]})
        assert server.proc.poll() is None, server.describe()  # never restarted, never died


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_503(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["status"] == 503


def event_body() -> dict[str, str]:
    return {"name": "Outage", "starts_at": "2027-05-01T09:00:00Z", "code": secrets.token_hex(4)}


def crud_calls(client: httpx.Client, key: dict[str, str], event_id: str) -> list[Any]:
    """One read, one list, one write: every kind of request that needs the database."""
    return [
        lambda: client.get(f"/v3/crud/event/{event_id}", headers=key),
        lambda: client.get("/v3/crud/event", headers=key),
        lambda: client.post("/v3/crud/event", json=event_body(), headers=key),
    ]


def recover(client: httpx.Client, key: dict[str, str], event_id: str) -> float:
    """Seconds until a read succeeds again; fails after RECOVERY_BUDGET."""
    started = time.monotonic()
    while True:
        response = client.get(f"/v3/crud/event/{event_id}", headers=key)
        elapsed = time.monotonic() - started
        if response.status_code == 200:
            return elapsed
        assert response.status_code == 503, response.text  # only "not yet", never 500
        assert elapsed < RECOVERY_BUDGET, f"no recovery after {elapsed:.1f} s"
        time.sleep(0.2)


def logged_statuses(server: ServerProcess) -> list[Any]:
    return [e.get("status") for e in server.log_entries() if "status" in e]


def no_500_logged(server: ServerProcess) -> None:
    assert 500 not in logged_statuses(server), server.stdout()[-3000:]


def report(name: str, **values: Any) -> None:
    shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()}
    print(f"\n[outage] {name}: {shown}")


def mariadb_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 3306


def mariadb_route(url: str) -> Callable[[str], dict[str, str]]:
    def route(netloc: str) -> dict[str, str]:
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        proxied = parts._replace(netloc=f"{userinfo}@{netloc}" if userinfo else netloc).geturl()
        return {
            "AE_DATABASE_URL": proxied,
            "AE_DB_POOL_TIMEOUT": "2",
            "AE_DB_POOL_SIZE": "2",
            # the client-side read timeout is the statement limit plus 5 s
            "AE_DB_STATEMENT_TIMEOUT_MS": "2000",
        }

    return route


# -- F1: MariaDB down ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["mariadb"])
def test_mariadb_down_answers_503_fast_and_recovers(
    empty_database_url: str, tmp_path: Path
) -> None:
    target = mariadb_target(empty_database_url)
    with (
        site_behind(empty_database_url, tmp_path, target, mariadb_route(empty_database_url)) as s,
        s.client() as client,
    ):
        written = client.post("/v3/crud/event", json=event_body(), headers=s.key)
        assert written.status_code == 201, written.text  # acknowledged before the outage
        event = written.json()
        for call in crud_calls(client, s.key, event["id"]):
            assert call().status_code in (200, 201)

        s.proxy.reset()
        timings = []
        for _round in range(2):
            for call in crud_calls(client, s.key, event["id"]):
                response, elapsed = timed(call)
                assert_503(response)
                assert elapsed <= DB_FAIL_BUDGET, elapsed
                timings.append(elapsed)
        assert client.get("/healthz").status_code == 200
        ready, ready_time = timed(lambda: client.get("/readyz"))
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["database"] == "unreachable"
        assert "retry-after" in ready.headers

        s.proxy.resume()
        recovered = recover(client, s.key, event["id"])
        again = client.get(f"/v3/crud/event/{event['id']}", headers=s.key)
        assert again.status_code == 200
        assert again.json()["code"] == event["code"]  # the acknowledged write survived
        for call in crud_calls(client, s.key, event["id"]):
            assert call().status_code in (200, 201)
        assert client.get("/readyz").status_code == 200
    no_500_logged(s.server)
    report(
        "mariadb reset",
        max_503_s=max(timings),
        mean_503_s=statistics.mean(timings),
        readyz_s=ready_time,
        recovery_s=recovered,
    )


# -- F2: MariaDB hung ------------------------------------------------------------------------


def parallel(calls: list[Callable[[], httpx.Response]]) -> list[tuple[Any, float]]:
    """Run `calls` at once; each result is (response or exception, seconds)."""
    results: list[tuple[Any, float]] = [(None, 0.0)] * len(calls)

    def run(i: int) -> None:
        started = time.monotonic()
        try:
            outcome: Any = calls[i]()
        except httpx.HTTPError as exc:
            outcome = exc
        results[i] = (outcome, time.monotonic() - started)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class HangNotBounded(AssertionError):
    """A request during a database hang took longer than HANG_BUDGET (or never answered)."""


@pytest.mark.parametrize("backend", ["mariadb"])
def test_mariadb_hang_fails_bounded_and_recovers(empty_database_url: str, tmp_path: Path) -> None:
    target = mariadb_target(empty_database_url)
    with (
        site_behind(empty_database_url, tmp_path, target, mariadb_route(empty_database_url)) as s,
        httpx.Client(base_url=s.server.base_url, timeout=HANG_BUDGET + 1) as hanging,
        s.client() as client,
    ):
        written = client.post("/v3/crud/event", json=event_body(), headers=s.key)
        assert written.status_code == 201, written.text
        event = written.json()

        s.proxy.blackhole()
        # More requests than pool_size + max_overflow (4): some hang on a connection (its
        # pre-ping or handshake), the rest wait on the pool.
        calls = crud_calls(hanging, s.key, event["id"]) * 2
        results: list[tuple[Any, float]] = []
        runner = threading.Thread(target=lambda: results.extend(parallel(calls)))
        runner.start()
        time.sleep(0.5)
        health, health_time = timed(lambda: client.get("/healthz"))
        assert health.status_code == 200  # the process itself keeps answering
        runner.join()

        s.proxy.resume()
        recovered = recover(client, s.key, event["id"])
        assert client.get("/readyz").status_code == 200
    statuses = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r, _ in results]
    timings = [t for _, t in results]
    report(
        "mariadb blackhole",
        statuses=statuses,
        timings_s=[round(t, 2) for t in timings],
        healthz_s=health_time,
        recovery_s=recovered,
    )
    for response, _elapsed in results:
        if isinstance(response, httpx.Response):
            # A hang may end as 503 (or 504), always as a problem, never as a 500.
            assert response.status_code in (503, 504), response.text
            assert response.headers["content-type"] == PROBLEM
    logged_500 = logged_statuses(s.server).count(500)
    late = [(s, round(t, 2)) for s, t in zip(statuses, timings, strict=True) if t > HANG_BUDGET]
    if late or not all(isinstance(r, httpx.Response) for r, _ in results):
        # A client that gave up on a hung request later shows as a logged 500 (an unhandled
        # ClientDisconnect when the request resumes): part of the same defect.
        raise HangNotBounded(
            f"requests over {HANG_BUDGET} s during a MariaDB hang: {late}; "
            f"logged 500s after resume: {logged_500}"
        )
    assert logged_500 == 0, s.server.stdout()[-3000:]


# -- F3: Redis down or hung ------------------------------------------------------------------


def redis_route(url: str) -> Callable[[str], dict[str, str]]:
    def route(netloc: str) -> dict[str, str]:
        parts = urlsplit(url)
        return {"AE_REDIS_URL": parts._replace(netloc=netloc).geturl()}

    return route


def mixed_requests(client: httpx.Client, key: dict[str, str], count: int) -> list[float]:
    """`count` sequential CRUD requests (create, read, list, patch); each must succeed."""
    timings = []
    event_id = ""
    for i in range(count):
        step = i % 4
        if step == 0:
            response, elapsed = timed(
                lambda: client.post("/v3/crud/event", json=event_body(), headers=key)
            )
            assert response.status_code == 201, response.text
            event_id = response.json()["id"]
        elif step == 1:
            response, elapsed = timed(
                partial(client.get, f"/v3/crud/event/{event_id}", headers=key)
            )
            assert response.status_code == 200, response.text
        elif step == 2:
            response, elapsed = timed(lambda: client.get("/v3/crud/event", headers=key))
            assert response.status_code == 200, response.text
        else:
            url, change = f"/v3/crud/event/{event_id}", {"name": f"Renamed {i}"}
            response, elapsed = timed(partial(client.patch, url, json=change, headers=key))
            assert response.status_code == 200, response.text
        assert elapsed < REDIS_BUDGET, (step, elapsed)
        timings.append(elapsed)
    return timings


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_redis_down_or_hung_costs_no_request(redis_test_url: str, tmp_path: Path) -> None:
    parts = urlsplit(redis_test_url)
    target = (parts.hostname or "127.0.0.1", parts.port or 6379)
    database = sqlite_url(tmp_path)
    with (
        site_behind(database, tmp_path / "work", target, redis_route(redis_test_url)) as s,
        s.client() as client,
    ):
        baseline = mixed_requests(client, s.key, 8)
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["redis"] == "ok"

        s.proxy.reset()  # Redis down: the first call trips the breaker, the rest use memory
        down = mixed_requests(client, s.key, 20)
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["redis"].startswith("degraded")

        time.sleep(COOLDOWN_WAIT)  # past the breaker's cooldown: the next call probes Redis
        s.proxy.blackhole()  # Redis hung: the probe waits its timeout, then memory again
        hung = mixed_requests(client, s.key, 20)
        ready, ready_hung_s = timed(lambda: client.get("/readyz"))
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["redis"].startswith("degraded")

        s.proxy.resume()
        time.sleep(COOLDOWN_WAIT)
        after = mixed_requests(client, s.key, 8)  # the first one's probe reconnects
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["redis"] == "ok"
    no_500_logged(s.server)
    assert "redis unavailable" in s.server.stdout() + s.server.stderr()
    report(
        "redis",
        baseline_p99_s=p99(baseline),
        down_p99_s=p99(down),
        hung_p99_s=p99(hung),
        hung_max_s=max(hung),
        hung_readyz_s=ready_hung_s,
        after_p99_s=p99(after),
    )
