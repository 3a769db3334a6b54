"""Content-addressed blob store: bytes in, SHA-256 out, and ranged reads back.

- `store`: the `BlobStore` protocol every store implements, and its value types;
- `filesystem`: `FileSystemBlobStore`, the local-disk implementation;
- `s3`: `S3BlobStore`, objects in an S3-compatible bucket (aiobotocore, imported on use);
- `factory`: `create_blob_store(settings)`, the one place a store is chosen;
- `_writer`: the hashing temp-file writer it uses; `_io`: worker-thread helpers.
"""

from __future__ import annotations

from engine.blobs.factory import create_blob_store
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
    "create_blob_store",
    "is_sha256",
]
