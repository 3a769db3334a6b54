"""Graceful shutdown: what a worker does between SIGTERM and its exit.

The server (uvicorn) stops accepting connections on SIGTERM or SIGINT, lets the requests in
flight finish (uploads included) for up to `AE_SHUTDOWN_TIMEOUT` seconds (`aether serve`
hands it `timeout_graceful_shutdown`), cancels what is left, then runs the app's shutdown.
`watch_signals` chains a handler in front of the server's own, so the app knows at once:
`/readyz` answers 503 from the signal on, and the log says how long the drain may take.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownState:
    """Whether this process has been told to stop."""

    def __init__(self) -> None:
        self.begun = False

    def begin(self, reason: str = "requested") -> None:
        if not self.begun:
            self.begun = True
            logger.warning("shutdown begun (%s): no new connections; finishing requests", reason)


@contextlib.contextmanager
def watch_signals(state: ShutdownState) -> Iterator[None]:
    """Mark `state` on SIGTERM/SIGINT, then call the handler the server installed.

    Only a handler the server put in place is chained (a Python callable); a process whose
    signals keep their default action (tests driving the app in-process) is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any]] = {}
    for sig in SIGNALS:
        handler = signal.getsignal(sig)
        if not callable(handler):
            continue
        previous[sig] = handler

        def chained(
            signum: int,
            frame: FrameType | None,
            then: Callable[[int, FrameType | None], Any] = handler,
        ) -> None:
            state.begin(signal.Signals(signum).name)
            then(signum, frame)

        signal.signal(sig, chained)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError):  # not the main thread any more
                signal.signal(sig, handler)
