"""Private Redis deployments the tests start themselves: a three-master Cluster and a
Sentinel watching its own master, each on free loopback ports in a temporary directory.

`start_cluster(dir)` and `start_sentinel(dir)` return a `RedisDeployment` (the URL and
cluster flag Aether is configured with, and `stop()`); the session fixtures `redis_cluster`
and `redis_sentinel` in `tests/conftest.py` start each once per test process, and
`redis_target` runs a test on the machine's Redis, the cluster and the sentinel alike.
The binaries are `redis-server` and `redis-cli`: absent, the tests skip with the reason
(and fail under AE_TEST_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 30.0
SERVICE = "aether"
PR_SET_PDEATHSIG = 1


@dataclass
class RedisDeployment:
    kind: str  # "standalone", "cluster" or "sentinel"
    url: str
    cluster: bool = False
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """The variables that point a server process at this deployment."""
        return {"AE_REDIS_URL": self.url, "AE_REDIS_CLUSTER": "true" if self.cluster else "false"}

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.processes.clear()


def die_with_parent() -> None:
    """Run in the child before exec: on Linux it gets SIGTERM when the test process dies,
    so no server outlives an interrupted or killed run (elsewhere this does nothing)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def missing_binaries() -> list[str]:
    return [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now (held open together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _server(directory: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    log = (directory / "redis.log").open("ab")
    try:
        return subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--protected-mode",
                "no",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    finally:
        log.close()


def _cli(port: int, *args: str, timeout: float = 10.0) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.stdout + done.stderr


def _wait(what: str, check: object, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: redis-server exited with {proc.returncode}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {START_TIMEOUT:.0f} s")


def start_cluster(directory: Path, masters: int = 3) -> RedisDeployment:
    """`masters` cluster nodes (no replicas) joined by `redis-cli --cluster create`."""
    ports = free_ports(2 * masters)
    data_ports, bus_ports = ports[:masters], ports[masters:]
    deployment = RedisDeployment("cluster", f"redis://127.0.0.1:{data_ports[0]}", cluster=True)
    try:
        for port, bus in zip(data_ports, bus_ports, strict=True):
            node_dir = directory / f"node-{port}"
            deployment.processes.append(
                _server(
                    node_dir,
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(bus),
                    "--cluster-config-file",
                    str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                )
            )
        deployment.ports = data_ports
        _wait(
            "cluster nodes",
            lambda: all("PONG" in _cli(p, "ping", timeout=2) for p in data_ports),
            deployment.processes,
        )
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in data_ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
        _wait(
            "the cluster",
            lambda: all(
                "cluster_state:ok" in _cli(p, "cluster", "info", timeout=2) for p in data_ports
            ),
            deployment.processes,
        )
    except BaseException:
        deployment.stop()
        raise
    return deployment


def start_sentinel(directory: Path, *, replica: bool = False) -> RedisDeployment:
    """A private master (and, with `replica`, one replica of it) and one sentinel watching
    them as service `aether`. `ports` is [master, sentinel] or [master, sentinel, replica]."""
    master_port, sentinel_port, replica_port = free_ports(3)
    deployment = RedisDeployment(
        "sentinel", f"redis+sentinel://127.0.0.1:{sentinel_port}/{SERVICE}/0"
    )
    try:
        deployment.processes.append(_server(directory / "master", master_port))
        _wait(
            "the sentinel's master",
            lambda: "PONG" in _cli(master_port, "ping", timeout=2),
            deployment.processes,
        )
        sentinel_dir = directory / "sentinel"
        sentinel_dir.mkdir(parents=True, exist_ok=True)
        config = sentinel_dir / "sentinel.conf"
        config.write_text(
            f"port {sentinel_port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f"dir {sentinel_dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 2000\n",
            encoding="ascii",
        )
        log = (sentinel_dir / "sentinel.log").open("ab")
        try:
            deployment.processes.append(
                subprocess.Popen(
                    ["redis-server", str(config), "--sentinel"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                )
            )
        finally:
            log.close()
        deployment.ports = [master_port, sentinel_port]
        _wait(
            "the sentinel",
            lambda: (
                str(master_port)
                in _cli(sentinel_port, "sentinel", "get-master-addr-by-name", SERVICE, timeout=2)
            ),
            deployment.processes,
        )
        if replica:
            replica_dir = directory / "replica"
            deployment.processes.append(
                _server(replica_dir, replica_port, "--replicaof", "127.0.0.1", str(master_port))
            )
            deployment.ports.append(replica_port)
            _wait(
                "the replica, in sync and known to the sentinel",
                lambda: (
                    "master_link_status:up" in _cli(replica_port, "info", "replication")
                    and str(replica_port) in _cli(sentinel_port, "sentinel", "replicas", SERVICE)
                ),
                deployment.processes,
            )
    except BaseException:
        deployment.stop()
        raise
    return deployment


def fail_over(deployment: RedisDeployment) -> int:
    """Make the sentinel promote the replica; answer its port once it is the master and the
    old master has been turned into its replica (writes it took meanwhile are lost, as
    with any Sentinel failover)."""
    master, sentinel, replica = deployment.ports
    deadline = time.monotonic() + START_TIMEOUT
    while "OK" not in (answer := _cli(sentinel, "sentinel", "failover", SERVICE)):
        # NOGOODSLAVE until the sentinel has talked to the replica itself (a few seconds)
        if time.monotonic() > deadline:
            raise RuntimeError(f"SENTINEL FAILOVER refused: {answer}")
        time.sleep(0.5)
    _wait(
        "the failover",
        lambda: (
            str(replica) in _cli(sentinel, "sentinel", "get-master-addr-by-name", SERVICE)
            and "role:master" in _cli(replica, "info", "replication")
            and "role:slave" in _cli(master, "info", "replication")  # demoted: no split brain
        ),
        deployment.processes,
    )
    return replica
