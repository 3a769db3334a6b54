"""`create_blob_store(settings)`: the S3 store when `AE_BLOB_URL` is set, else the directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.blobs.filesystem import FileSystemBlobStore
from engine.blobs.store import BlobStore

if TYPE_CHECKING:
    from engine.settings import Settings


def create_blob_store(settings: Settings) -> BlobStore:
    """The store the settings name; nothing connects until the first call on it."""
    if settings.blob_url:
        from engine.blobs.s3 import S3BlobStore

        secret = settings.s3_secret_access_key
        return S3BlobStore(
            settings.blob_url,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=None if secret is None else str(secret),
        )
    return FileSystemBlobStore(Path(settings.blob_dir))
