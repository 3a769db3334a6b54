"""Operations on a whole installation: backups that restore, and portable account exports.

- `backup`: `aether backup` / `aether restore`, one archive holding a consistent database
  dump, the blobs its rows reference and a manifest (revision, rows and checksum per table,
  blob hashes);
- `portable`: `aether export --account SLUG` / `aether import`, one account's rows as JSON
  lines with its blobs, loaded elsewhere under new internal ids and the same public ids;
- `dumps`: the per-database dump and load (mariadb-dump, pg_dump, SQLite's backup API);
- `archive`: the tar archives, manifests and checksums both share; `progress`: the bar.
"""

from __future__ import annotations

from engine.ops.archive import OpsError
from engine.ops.backup import BackupResult, RestoreResult, backup, restore
from engine.ops.portable import ExportResult, ImportResult, export_account, import_account

__all__ = [
    "BackupResult",
    "ExportResult",
    "ImportResult",
    "OpsError",
    "RestoreResult",
    "backup",
    "export_account",
    "import_account",
    "restore",
]
