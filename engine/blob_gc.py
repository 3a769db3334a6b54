"""Garbage collection for the blob store: remove what no row references any more.

`collect_garbage` walks a `BlobStore`'s blobs and temp files and removes those that are
unreferenced and older than a grace period, which protects uploads still in flight.
`GcReport` says what was removed (or would be, on a dry run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engine.blobs import BlobStore

__all__ = ["GcReport", "collect_garbage"]


@dataclass(slots=True)
class GcReport:
    """What one garbage collection removed (or would remove, when `dry_run`)."""

    dry_run: bool
    removed_blobs: list[str] = field(default_factory=list)
    removed_temp_files: list[str] = field(default_factory=list)
    kept_recent: int = 0


async def collect_garbage(
    store: BlobStore,
    referenced: set[str],
    *,
    grace_seconds: float,
    dry_run: bool,
    now: float | None = None,
) -> GcReport:
    """Remove blobs not in `referenced` and temp files, both older than `grace_seconds`.

    The grace period protects uploads in flight: their blob may be on disk before the row
    that references it commits (and a dedup hit refreshes the blob's mtime).
    """
    cutoff = (time.time() if now is None else now) - grace_seconds
    report = GcReport(dry_run=dry_run)
    async for blob in store.iter_blobs():
        if blob.sha256 in referenced:
            continue
        if blob.mtime > cutoff:
            report.kept_recent += 1
            continue
        if dry_run or await store.delete(blob.sha256):
            report.removed_blobs.append(blob.sha256)
    async for temp in store.iter_temp_files():
        if temp.mtime > cutoff:
            report.kept_recent += 1
            continue
        if dry_run or await store.remove_temp_file(temp.name):
            report.removed_temp_files.append(temp.name)
    return report
