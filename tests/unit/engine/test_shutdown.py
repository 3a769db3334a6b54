"""`watch_signals`: the app learns of SIGTERM before the server's own handler runs."""

from __future__ import annotations

import signal
from types import FrameType

from engine.shutdown import ShutdownState, watch_signals


def test_sigterm_marks_the_state_then_reaches_the_server_handler() -> None:
    seen: list[tuple[int, bool]] = []
    state = ShutdownState()

    def server_handler(signum: int, frame: FrameType | None) -> None:
        seen.append((signum, state.begun))

    original = signal.signal(signal.SIGTERM, server_handler)
    try:
        with watch_signals(state):
            assert not state.begun
            signal.raise_signal(signal.SIGTERM)
        assert state.begun
        assert seen == [(signal.SIGTERM, True)]  # marked before the server saw it
        assert signal.getsignal(signal.SIGTERM) is server_handler  # restored on exit
    finally:
        signal.signal(signal.SIGTERM, original)


def test_a_default_handler_is_left_alone() -> None:
    original = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with watch_signals(ShutdownState()):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, original)
