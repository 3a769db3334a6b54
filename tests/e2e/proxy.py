"""A threaded TCP proxy on 127.0.0.1 for outage tests: forward, reset, blackhole, resume.

`reset()` is a dead server (every connection closed, new ones refused), `blackhole()` a hung
one, like SIGSTOP (connections accepted or kept, bytes held in the kernel, nothing answered);
`resume()` forwards again on the same port, and held bytes flow on as after SIGCONT.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

POLL_SECONDS = 0.05
CONNECT_TIMEOUT = 5.0
FORWARD, DOWN, BLACKHOLE, CLOSED = "forward", "down", "blackhole", "closed"


def via_port(url: str, port: int, host: str = "127.0.0.1") -> str:
    """`url` with its host:port replaced (user, password, path and query kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Relays 127.0.0.1:`port` to `target`; one thread per connection direction."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode = CLOSED
        self.accepted = 0  # connections accepted since start (for reports)
        self._cond = threading.Condition()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()

    # -- control -------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._listen()
        self._set_mode(FORWARD)
        return self

    def reset(self) -> None:
        """Close every connection and the listener: new connections are refused."""
        self._set_mode(DOWN)
        self._drop_listener()
        with self._cond:
            held, self._sockets = set(self._sockets), set()
        for sock in held:
            _close(sock)

    def blackhole(self) -> None:
        """Keep accepting but stop moving bytes in either direction.

        Returns once every pump has seen the change: a pump already waiting in select()
        forwards what arrives during that one poll, so a request sent right after would
        otherwise slip through.
        """
        if self._listener is None:
            self._listen()
        self._set_mode(BLACKHOLE)
        time.sleep(2 * POLL_SECONDS)

    def resume(self) -> None:
        """Forward again on the same port (held connections continue)."""
        if self._listener is None:
            self._listen()
        self._set_mode(FORWARD)

    def stop(self) -> None:
        self.reset()
        self._set_mode(CLOSED)

    def url_for(self, url: str) -> str:
        return via_port(url, self.port)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------

    def _set_mode(self, mode: str) -> None:
        with self._cond:
            self.mode = mode
            self._cond.notify_all()

    def _wait_unblocked(self) -> str:
        """Block while blackholed; the mode that ended the wait."""
        with self._cond:
            while self.mode == BLACKHOLE:
                self._cond.wait()
            return self.mode

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The same port again after reset(): the old one may sit in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _addr = listener.accept()
            except OSError:
                return  # the listener was closed
            self.accepted += 1
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._cond:
            self._sockets.add(sock)

    def _connect(self, client: socket.socket) -> None:
        # A connection made while blackholed waits here, as one to a stopped server would.
        if self._wait_unblocked() != FORWARD:
            _close(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
        except OSError:
            _close(client)
            return
        self._track(upstream)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                if self._wait_unblocked() != FORWARD:
                    break
                # Poll so a blackhole takes effect promptly, leaving unread bytes in the kernel.
                readable, _, _ = select.select([source], [], [], POLL_SECONDS)
                if not readable:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                # Bytes read just before a blackhole still go through (as already sent).
                sink.sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket closed by reset()
            pass
        with self._cond:
            self._sockets.difference_update((source, sink))
        _close(source)
        _close(sink)
