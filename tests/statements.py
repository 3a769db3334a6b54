"""Count the SQL statements an app sends, on every engine it has."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from engine.runtime import Runtime


@contextmanager
def count_statements(runtime: Runtime) -> Iterator[list[str]]:
    """Every statement (as SQL text) the runtime's engines send while the block runs."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    engines = [e.sync_engine for e in runtime.engines]
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", record)
