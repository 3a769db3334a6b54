"""Content-addressed blob store: bytes in, SHA-256 out, and ranged reads back.

- `store`: the `BlobStore` protocol every store implements, and its value types;
- `filesystem`: `FileSystemBlobStore`, the local-disk implementation;
- `_writer`: the hashing temp-file writer it uses; `_io`: worker-thread helpers.
"""

from __future__ import annotations

from engine.blobs.filesystem import FileSystemBlobStore
from engine.blobs.store import (
    CHUNK_SIZE,
    BlobInfo,
    BlobReader,
    BlobStore,
    BlobWriter,
    StoredBlob,
    TempFileInfo,
    is_sha256,
)

__all__ = [
    "CHUNK_SIZE",
    "BlobInfo",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "FileSystemBlobStore",
    "StoredBlob",
    "TempFileInfo",
    "is_sha256",
]
