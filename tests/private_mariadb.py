"""Private MariaDB servers the tests start themselves: own data directories, loopback ports.

`replicated_pair()` starts a primary and a replica (binary log, GTID replication through
`CHANGE MASTER TO … START SLAVE`) and stops both afterwards. Without the MariaDB binaries
the test is skipped with the reason printed, except under `AE_TEST_REQUIRE_SERVICES=1`,
where it fails.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import require_services
from tests.redis_servers import die_with_parent

START_TIMEOUT = 60.0
REPLICATION_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binaries() -> tuple[str, str, str]:
    """mariadbd, mariadb-install-db and the mariadb client, or skip (fail under CI)."""
    found = [
        shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        for name in ("mariadbd", "mariadb-install-db", "mariadb")
    ]
    if not all(found):
        reason = "MariaDB binaries (mariadbd, mariadb-install-db, mariadb) are not installed"
        if require_services():
            pytest.fail(reason + " (AE_TEST_REQUIRE_SERVICES=1)", pytrace=False)
        print(f"skipped: {reason}")
        pytest.skip(reason)
    server, install, client = found
    assert server and install and client
    return server, install, client


@dataclass
class PrivateMariaDB:
    """One `mariadbd` on 127.0.0.1:`port`, data in `root`; root may connect without a password."""

    root: Path
    server_id: int
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.root / "mysqld.sock"

    def url(self, database: str = "") -> str:
        return f"mysql+asyncmy://root@127.0.0.1:{self.port}/{database}"

    @property
    def tmpdir(self) -> Path:
        """A temporary directory of its own: servers bootstrapping at once in a shared /tmp
        collide on their temporary tables' names."""
        return self.root / "tmp"

    def install(self) -> None:
        _server, install, _client = binaries()
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.root / 'data'}",
                f"--tmpdir={self.tmpdir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=" + _user(),
            ],
            capture_output=True,
            timeout=120,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise AssertionError(f"mariadb-install-db failed:\n{output[-3000:]}")

    def start(self) -> None:
        server, _install, _client = binaries()
        if not self.port:
            self.port = free_port()
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                server,
                "--no-defaults",
                f"--datadir={self.root / 'data'}",
                f"--socket={self.socket_path}",
                f"--tmpdir={self.tmpdir}",
                f"--pid-file={self.root / 'mysqld.pid'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--server-id={self.server_id}",
                "--log-bin=binlog",
                "--binlog-format=ROW",
                "--log-slave-updates",
                "--innodb-buffer-pool-size=32M",
                "--performance-schema=OFF",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
                "--user=" + _user(),
            ],
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent,  # no mariadbd left behind by an interrupted run
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"mariadbd exited:\n{self.log()[-3000:]}")
            if self.socket_path.exists() and _port_open(self.port):
                try:
                    self.sql("SELECT 1")
                    return
                except subprocess.CalledProcessError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"mariadbd did not start:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    def sql(self, statement: str) -> str:
        """Run `statement` as root over the socket; tab-separated rows without headers."""
        _server, _install, client = binaries()
        done = subprocess.run(
            [client, "--no-defaults", f"--socket={self.socket_path}", "-uroot", "-N", "-B"],
            input=statement.encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        return done.stdout.decode()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _user() -> str:
    import getpass

    return getpass.getuser()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


ROOT_OVER_TCP = (
    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';"
    "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
)


@contextlib.contextmanager
def replicated_pair(tmp: Path) -> Iterator[tuple[PrivateMariaDB, PrivateMariaDB]]:
    """A primary and a replica following it (GTID); both stopped on exit."""
    binaries()
    primary = PrivateMariaDB(tmp / "primary", server_id=1)
    replica = PrivateMariaDB(tmp / "replica", server_id=2)
    try:
        for server in (primary, replica):
            server.root.mkdir(parents=True)
            server.install()
            server.start()
        # Users are made before replication starts, on each server (binlog off for them).
        primary.sql(
            "SET sql_log_bin=0;" + ROOT_OVER_TCP + "CREATE USER 'repl'@'127.0.0.1';"
            "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';"
        )
        replica.sql("SET sql_log_bin=0;" + ROOT_OVER_TCP)
        gtid = primary.sql("SELECT @@gtid_binlog_pos").strip()
        replica.sql(
            f"SET GLOBAL gtid_slave_pos='{gtid}';"
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
            "MASTER_USER='repl', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, "
            "MASTER_CONNECT_RETRY=1;"
            "START SLAVE;"
        )
        yield primary, replica
    finally:
        for server in (replica, primary):
            server.stop()


def wait_replicated(primary: PrivateMariaDB, replica: PrivateMariaDB) -> None:
    """Until the replica has applied everything the primary logged so far."""
    target = primary.sql("SELECT @@gtid_binlog_pos").strip()
    replica.sql(f"SELECT MASTER_GTID_WAIT('{target}', {REPLICATION_TIMEOUT})")
    applied = replica.sql("SELECT @@gtid_slave_pos").strip()
    assert applied == target, (applied, target, replica.sql("SHOW SLAVE STATUS\\G"))
