"""Worker-thread helpers the blob stores share: disk I/O never runs on the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")


async def in_thread(func: Callable[[], _T]) -> _T:
    return await asyncio.to_thread(func)


async def shielded(func: Callable[[], None]) -> None:
    """Run `func` in a thread to completion even while the caller is being cancelled.

    Cleanup (a client disconnect) must finish: the shielded thread call runs on while the
    cancellation propagates.
    """
    await asyncio.shield(asyncio.to_thread(func))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
