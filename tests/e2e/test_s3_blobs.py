"""A real server keeping its blobs in S3 (`AE_BLOB_URL`), against a private moto server.

Uploads (one below a part, one that takes the multipart path), whole and ranged downloads,
downloads by hash, a dedupe hit, the store bound to its database, and `aether gc-blobs`
removing only what no row references.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from engine.blobs.s3 import PART_SIZE, S3BlobStore
from tests.e2e.conftest import AetherEnv, aether_env, sqlite_url
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

pytestmark = pytest.mark.e2e

EVENT = {"name": "S3 Gala", "starts_at": "2027-05-01T09:00:00Z", "code": "S3-1"}


def bucket_store(server: S3Server, bucket: str) -> S3BlobStore:
    return S3BlobStore(
        f"s3://{bucket}/aether",
        endpoint_url=server.endpoint_url,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )


def in_bucket(server: S3Server, bucket: str) -> dict[str, Any]:
    """What the bucket holds: blob names, the store id, multipart uploads left."""

    async def look() -> dict[str, Any]:
        store = bucket_store(server, bucket)
        try:
            client = await store.client()
            uploads = await client.list_multipart_uploads(Bucket=bucket)
            return {
                "blobs": sorted([b.sha256 async for b in store.iter_blobs()]),
                "store_id": await store.read_store_id(),
                "uploads": len(uploads.get("Uploads", ())),
            }
        finally:
            await store.close()

    return asyncio.run(look())


def put_orphan(server: S3Server, bucket: str, data: bytes) -> str:
    async def put() -> str:
        store = bucket_store(server, bucket)
        try:
            return (await store.put(_one(data))).sha256
        finally:
            await store.close()

    return asyncio.run(put())


async def _one(data: bytes):  # type: ignore[no-untyped-def]
    yield data


def test_uploads_downloads_and_gc_with_s3(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    with aether_env(sqlite_url(tmp_path), tmp_path / "work", **s3_server.env(bucket)) as env:
        env.cli("migrate")
        key = env.create_account("s3-tenant")["api_key"]
        server = env.serve()
        h = {"X-API-Key": key}
        small = b"%PDF-1.4\n" + b"slides " * 300
        large = b"%PDF-1.4\n" + os.urandom(PART_SIZE + PART_SIZE // 2)  # three parts
        with server.client() as c:
            event = c.post("/v3/crud/event", json=EVENT, headers=h)
            assert event.status_code == 201, event.text
            event_id = event.json()["id"]
            r = c.post(
                f"/v3/action/event/{event_id}/upload",
                files=[
                    ("file", ("small.pdf", small, "application/pdf")),
                    ("file", ("large.pdf", large, "application/pdf")),
                ],
                headers=h,
            )
            assert r.status_code == 201, r.text
            small_file, large_file = r.json()["files"]
            assert small_file["sha256"] == hashlib.sha256(small).hexdigest()
            assert large_file["sha256"] == hashlib.sha256(large).hexdigest()

            whole = c.get(f"/v3/action/download/{large_file['id']}", headers=h)
            assert whole.status_code == 200 and whole.content == large
            ranged = c.get(
                f"/v3/action/download/{large_file['id']}",
                headers={**h, "Range": f"bytes={PART_SIZE - 5}-{PART_SIZE + 4}"},
            )
            assert ranged.status_code == 206, ranged.text
            assert ranged.content == large[PART_SIZE - 5 : PART_SIZE + 5]
            assert (
                ranged.headers["content-range"]
                == f"bytes {PART_SIZE - 5}-{PART_SIZE + 4}/{len(large)}"
            )
            by_hash = c.get(f"/v3/action/blob/{small_file['sha256']}", headers=h)
            assert by_hash.status_code == 200 and by_hash.content == small
            missing = c.get(f"/v3/action/blob/{'0' * 64}", headers=h)
            assert missing.status_code == 404

            again = c.post(  # the same bytes again: stored once
                f"/v3/action/event/{event_id}/upload",
                files=[("file", ("copy.pdf", large, "application/pdf"))],
                headers=h,
            )
            assert again.status_code == 201, again.text

        held = in_bucket(s3_server, bucket)
        assert held["blobs"] == sorted([small_file["sha256"], large_file["sha256"]])
        assert held["uploads"] == 0  # no multipart upload left behind
        assert held["store_id"] is not None  # bound to this database at start-up

        orphan = put_orphan(s3_server, bucket, b"bytes no row references")
        done = env.cli("gc-blobs", "--grace", "0")
        assert orphan in done.stdout, done.stdout
        after = in_bucket(s3_server, bucket)
        assert after["blobs"] == held["blobs"]  # the referenced blobs stay
        with server.client() as c:
            assert c.get(f"/v3/action/download/{small_file['id']}", headers=h).content == small


def test_a_store_bound_to_another_database_is_refused(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    first = sqlite_url(tmp_path)
    with aether_env(first, tmp_path / "one", **s3_server.env(bucket)) as env:
        env.cli("migrate")
        env.cli("gc-blobs", "--dry-run")  # binds the bucket to the first database
    bound = in_bucket(s3_server, bucket)["store_id"]
    assert bound is not None
    other: AetherEnv
    with aether_env(sqlite_url(tmp_path), tmp_path / "two", **s3_server.env(bucket)) as other:
        other.cli("migrate")
        refused = other.cli("gc-blobs", "--grace", "0", check=False)
        assert refused.returncode == 1
        assert "another database" in refused.stderr and f"s3://{bucket}/aether" in refused.stderr
