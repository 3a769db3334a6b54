"""A progress bar for long operations, drawn on stderr only when stderr is a terminal.

Piped or logged runs (cron, CI, `kubectl exec` without a TTY) get no bar, so stderr keeps
only log lines and the one-line error of a failed command.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Advance(Protocol):
    def __call__(self, amount: int) -> None: ...


def _ignore(amount: int) -> None:
    return None


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool | None = None) -> Iterator[Advance]:
    """Yield `advance(n)`; with a terminal on stderr (or `enabled=True`) a rich bar shows
    `description`, bytes done of `total`, the rate and the time left."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=max(total, 1))

        def advance(amount: int) -> None:
            bar.update(task, advance=amount)

        yield advance
