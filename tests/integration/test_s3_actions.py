"""Uploads and downloads through the app with its blobs in S3, on every database.

The bucket is on a private moto server (`tests/s3_server.py`). When S3 cannot be reached
an upload answers 503 with `Retry-After` and writes no row; a download answers 503.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.blobs.s3 import PART_SIZE, S3BlobStore
from tests.integration.conftest import Api, make_api, make_settings
from tests.integration.test_actions import PDF, counts, make_event, upload
from tests.redis_servers import free_ports
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server


def s3_settings(database_url: str, tmp_path: Path, endpoint: str, bucket: str) -> object:
    return make_settings(
        database_url,
        tmp_path,
        blob_url=f"s3://{bucket}/app",
        s3_endpoint_url=endpoint,
        s3_region=REGION,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
async def s3_api(database_url: str, tmp_path: Path, s3_server: S3Server) -> AsyncIterator[Api]:
    settings = s3_settings(database_url, tmp_path, s3_server.endpoint_url, s3_server.new_bucket())
    made = await make_api(settings, None)  # type: ignore[arg-type]
    async with made.client:
        yield made
    await made.runtime.close()


@pytest.fixture
async def dead_s3_api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    (port,) = free_ports(1)  # nothing listens here
    settings = s3_settings(database_url, tmp_path, f"http://127.0.0.1:{port}", "aether-gone")
    made = await make_api(settings, None)  # type: ignore[arg-type]
    async with made.client:
        yield made
    await made.runtime.close()


async def test_upload_and_download_with_s3(s3_api: Api) -> None:
    store = s3_api.runtime.blobs
    assert isinstance(store, S3BlobStore)
    event = await make_event(s3_api)
    large = b"%PDF-1.4\n" + os.urandom(PART_SIZE + 1000)
    r = await upload(
        s3_api,
        event["id"],
        [
            ("file", ("a.pdf", PDF, "application/pdf")),
            ("file", ("b.pdf", large, "application/pdf")),
        ],
    )
    assert r.status_code == 201, r.text
    small_file, large_file = r.json()["files"]
    assert large_file["sha256"] == hashlib.sha256(large).hexdigest()
    h = s3_api.a.headers("viewer")
    whole = await s3_api.client.get(f"/v3/action/download/{large_file['id']}", headers=h)
    assert whole.status_code == 200 and whole.content == large
    part = await s3_api.client.get(
        f"/v3/action/download/{small_file['id']}", headers={**h, "Range": "bytes=2-5"}
    )
    assert part.status_code == 206 and part.content == PDF[2:6]
    assert sorted([b.sha256 async for b in store.iter_blobs()]) == sorted(
        [small_file["sha256"], large_file["sha256"]]
    )
    assert [t async for t in store.iter_temp_files()] == []
    # The other tenant sees neither the file nor the blob.
    other = await s3_api.client.get(
        f"/v3/action/blob/{small_file['sha256']}", headers=s3_api.b.headers()
    )
    assert other.status_code == 404


async def test_s3_unreachable_is_503_and_writes_nothing(dead_s3_api: Api) -> None:
    event = await make_event(dead_s3_api)
    before = await counts(dead_s3_api.runtime)
    r = await upload(dead_s3_api, event["id"], [("file", ("a.pdf", PDF, "application/pdf"))])
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"]
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await counts(dead_s3_api.runtime) == before


async def test_a_download_while_s3_is_unreachable_is_503(s3_api: Api) -> None:
    event = await make_event(s3_api)
    r = await upload(s3_api, event["id"], [("file", ("a.pdf", PDF, "application/pdf"))])
    assert r.status_code == 201, r.text
    file_id = r.json()["files"][0]["id"]
    live = s3_api.runtime.blobs
    (port,) = free_ports(1)
    s3_api.runtime.blobs = S3BlobStore(
        "s3://aether-gone/app",
        endpoint_url=f"http://127.0.0.1:{port}",
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    try:
        d = await s3_api.client.get(f"/v3/action/download/{file_id}", headers=s3_api.a.headers())
        assert d.status_code == 503, d.text
        assert d.headers["retry-after"]
    finally:
        await s3_api.runtime.blobs.close()
        s3_api.runtime.blobs = live
    again = await s3_api.client.get(f"/v3/action/download/{file_id}", headers=s3_api.a.headers())
    assert again.status_code == 200 and again.content == PDF
