"""`S3BlobStore`: blobs as objects in an S3-compatible bucket (`AE_BLOB_URL=s3://bucket/prefix`).

The same guarantees as the file-system store, with S3's own means:

- **Layout**: `<prefix>blobs/<sha256>` for blobs, `<prefix>store-id` for the store id,
  `<prefix>tmp/<start ms>-<uuid>` for uploads under way.
- **Streaming**: bytes are hashed as they come and sent in parts of `part_size` (8 MiB);
  at most one part is held in memory. A blob smaller than one part is one `PutObject`;
  a larger one is a multipart upload to a temp key, which, once the hash is known, is
  copied server-side into place (`UploadPartCopy`, no byte comes back) and removed.
- **Exactly one creator**: the final write is conditional (`If-None-Match: *`), so of two
  racing writers of the same bytes exactly one reports `created`; a blob already there is
  never uploaded twice (a `HeadObject` first when the upload is large).
- **Grace period**: a blob's age is its `LastModified`; a writer that finds its bytes
  already stored refreshes it (a copy onto itself), as the file store refreshes the mtime.
  Uploads that died half way are multipart uploads (and temp objects) under `tmp/`, which
  garbage collection lists with their start time and aborts past the grace period.
- **Reads**: `GetObject` with a `Range`, streamed in CHUNK_SIZE pieces.

The client is aiobotocore: asyncio-native (aiohttp), so parts and ranges stream on the event
loop without a worker thread per chunk, with botocore's request signing, retries and the
standard credential chain (`AE_S3_ACCESS_KEY_ID`/`AE_S3_SECRET_ACCESS_KEY`, else `AWS_*`
variables, shared config files, instance roles). It is imported only when a store is made,
so installations without S3 need not install it (`pip install aether[s3]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from engine.blobs.store import (
    CHUNK_SIZE,
    BlobInfo,
    BlobReader,
    BlobWriter,
    StoredBlob,
    TempFileInfo,
    is_sha256,
    put_through_writer,
)
from engine.errors import NotFoundError, PayloadTooLargeError, ServiceUnavailableError

__all__ = ["MAX_S3_BLOB_BYTES", "PART_SIZE", "S3BlobStore", "S3Location", "parse_s3_url"]

logger = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
"""Bytes per uploaded part (S3 needs at least 5 MiB for every part but the last)."""
MIN_PART_SIZE = 5 * 1024 * 1024
COPY_PART_SIZE = 1024 * 1024 * 1024
"""Bytes per server-side copied part (S3 allows up to 5 GiB)."""
MAX_S3_BLOB_BYTES = 5 * 1024**3
"""The largest blob refreshed by one `CopyObject` (S3's limit): `AE_UPLOAD_MAX_BYTES` cap."""
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
_PRECONDITION = {"412", "PreconditionFailed"}
_CONFLICT = {"409", "ConditionalRequestConflict"}


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def parse_s3_url(url: str) -> S3Location:
    """`s3://bucket[/prefix]`; raises ValueError naming the problem."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "s3":
        raise ValueError(f"the blob store URL is s3://bucket[/prefix], not {url!r}")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not an S3 bucket name")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts) or any(c in prefix for c in "\\\x00{}"):
        raise ValueError(f"{prefix!r} is not a usable key prefix")
    return S3Location(bucket, "".join(p + "/" for p in parts))


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = str(error.get("Code", ""))
        status = str((response.get("ResponseMetadata") or {}).get("HTTPStatusCode", ""))
        return code or status
    return ""


def _is(exc: BaseException, codes: set[str]) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    status = str((response.get("ResponseMetadata") or {}).get("HTTPStatusCode", ""))
    return _code(exc) in codes or status in codes


def _unavailable(exc: BaseException) -> ServiceUnavailableError:
    logger.warning("blob store (S3) failed: %s: %s", type(exc).__name__, exc)
    return ServiceUnavailableError("The blob store is unavailable; try again later")


def _is_s3_failure(exc: BaseException) -> bool:
    """An error from the client or the network (not a bug of ours, not our own answer)."""
    module = type(exc).__module__ or ""
    return module.startswith(("botocore", "aiobotocore", "aiohttp")) or isinstance(
        exc, (OSError, TimeoutError)
    )


def _failure(exc: Exception) -> Exception:
    """What a caller sees for an S3 failure: a 503; anything else as it is."""
    return _unavailable(exc) if _is_s3_failure(exc) else exc


@contextlib.asynccontextmanager
async def _answering_503() -> AsyncIterator[None]:
    """S3 or network failures inside become ServiceUnavailableError (503, Retry-After)."""
    try:
        yield
    except Exception as exc:
        if _is_s3_failure(exc):
            raise _unavailable(exc) from exc
        raise


def _named_start(name: str) -> float:
    """The start time a writer put in its temp name (`<ms>-<uuid>`), else 0."""
    millis, dash, _ = name.partition("-")
    return int(millis) / 1000 if dash and millis.isdigit() and len(millis) < 16 else 0.0


class _S3Reader:
    """Streams one GetObject body in CHUNK_SIZE pieces; `aclose` releases the connection."""

    def __init__(self, body: Any | None) -> None:
        self._body = body

    def __aiter__(self) -> _S3Reader:
        return self

    async def __anext__(self) -> bytes:
        if self._body is None:
            raise StopAsyncIteration
        try:
            data = await self._body.read(CHUNK_SIZE)
        except BaseException:
            await self.aclose()
            raise
        if not data:
            await self.aclose()
            raise StopAsyncIteration
        return bytes(data)

    async def aclose(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):
                body.close()


class S3Writer:
    """One blob being streamed to S3 (see the module's description)."""

    def __init__(self, store: S3BlobStore, max_bytes: int | None) -> None:
        self._store = store
        self._max_bytes = max_bytes
        # The start time is in the name: a multipart upload's `Initiated` is not kept by
        # every S3-compatible server, and garbage collection must not take it for old.
        self._temp_key = store.temp_key(f"{time.time_ns() // 1_000_000}-{uuid.uuid4().hex}")
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._temp_object = False  # the multipart upload completed into tmp/<uuid>
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("blob writer already finished")
        self._size += len(data)
        if self._max_bytes is not None and self._size > self._max_bytes:
            await self.abort()
            raise PayloadTooLargeError(f"Content is larger than {self._max_bytes} bytes")
        self._buffer += data
        if len(self._buffer) >= self._store.part_size:
            await self._guard(self._send_part())

    async def _guard(self, work: Any) -> Any:
        try:
            return await work
        except BaseException as exc:
            await self.abort()
            if isinstance(exc, Exception):
                raise _failure(exc) from exc
            raise

    async def _hash_buffer(self) -> bytes:
        chunk = bytes(self._buffer)
        self._buffer = bytearray()
        await asyncio.to_thread(self._hash.update, chunk)  # hashlib frees the GIL
        return chunk

    async def _send_part(self) -> None:
        chunk = await self._hash_buffer()
        client = await self._store.client()
        if self._upload_id is None:
            made = await client.create_multipart_upload(
                Bucket=self._store.bucket, Key=self._temp_key
            )
            self._upload_id = str(made["UploadId"])
        number = len(self._parts) + 1
        sent = await client.upload_part(
            Bucket=self._store.bucket,
            Key=self._temp_key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=chunk,
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def commit(self) -> StoredBlob:
        if self._done:
            raise RuntimeError("blob writer already finished")
        stored: StoredBlob = await self._guard(self._commit())
        self._done = True
        return stored

    async def _commit(self) -> StoredBlob:
        store = self._store
        if self._upload_id is None:  # smaller than one part: a single conditional PUT
            body = await self._hash_buffer()
            sha256 = self._hash.hexdigest()
            created = await store.put_new(store.blob_key(sha256), body)
        else:
            if self._buffer:
                await self._send_part()
            sha256 = self._hash.hexdigest()
            if await store.exists(sha256):
                created = False
            else:
                await self._complete_temp()
                created = await store.copy_new(self._temp_key, store.blob_key(sha256), self._size)
            await self._discard_temp()
        if not created:
            await store.touch(sha256)  # the grace period protects the blob we now reference
        return StoredBlob(sha256=sha256, size=self._size, created=created)

    async def _complete_temp(self) -> None:
        client = await self._store.client()
        await client.complete_multipart_upload(
            Bucket=self._store.bucket,
            Key=self._temp_key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None
        self._temp_object = True

    async def _discard_temp(self) -> None:
        """Abort the multipart upload or delete the completed temp object (whichever exists)."""
        client = await self._store.client()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            with contextlib.suppress(Exception):  # else garbage collection aborts it later
                await client.abort_multipart_upload(
                    Bucket=self._store.bucket, Key=self._temp_key, UploadId=upload_id
                )
        if self._temp_object:
            self._temp_object = False
            with contextlib.suppress(Exception):
                await client.delete_object(Bucket=self._store.bucket, Key=self._temp_key)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        if self._upload_id is not None or self._temp_object:
            # Cleanup must finish even while the caller is being cancelled.
            await asyncio.shield(asyncio.ensure_future(self._discard_temp()))


class S3BlobStore:
    """Blobs in `bucket` under `prefix` on S3 or any S3-compatible server. Implements
    `BlobStore`; `close()` releases the client's connections."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.where = parse_s3_url(url)
        self.bucket = self.where.bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self.part_size = part_size
        self._client: Any | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    @property
    def location(self) -> str:
        return (
            self.where.url if not self.endpoint_url else f"{self.where.url} at {self.endpoint_url}"
        )

    def blob_key(self, sha256: str) -> str:
        return f"{self.where.prefix}blobs/{sha256}"

    def temp_key(self, name: str) -> str:
        return f"{self.where.prefix}tmp/{name}"

    @property
    def store_id_key(self) -> str:
        return f"{self.where.prefix}store-id"

    async def client(self) -> Any:
        """The aiobotocore S3 client, made on first use (in the running event loop)."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
                from aiobotocore.session import get_session  # type: ignore[import-untyped]

                config = AioConfig(
                    connect_timeout=5,
                    read_timeout=60,
                    retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=50,
                    s3={"addressing_style": "path"} if self.endpoint_url else None,
                )
                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=self.endpoint_url,
                        region_name=self.region,
                        aws_access_key_id=self._access_key_id,
                        aws_secret_access_key=self._secret_access_key,
                        config=config,
                    )
                )
                self._stack = stack
        return self._client

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    # -- conditional writes ---------------------------------------------------------------

    async def put_new(self, key: str, body: bytes) -> bool:
        """PUT `body` at `key` unless an object is there; True when this call created it."""
        client = await self.client()
        for attempt in range(5):
            try:
                await client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
                return True
            except Exception as exc:
                if _is(exc, _PRECONDITION):
                    return False
                if not _is(exc, _CONFLICT) or attempt == 4:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))  # a racing write of the same key
        raise AssertionError("unreachable")

    async def copy_new(self, source: str, key: str, size: int) -> bool:
        """Copy object `source` to `key` server-side unless `key` exists; True when created.

        A multipart copy (UploadPartCopy) completed with `If-None-Match: *`, so any size
        works and exactly one of two racing copies wins.
        """
        client = await self.client()
        made = await client.create_multipart_upload(Bucket=self.bucket, Key=key)
        upload_id = made["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, max(size, 1), COPY_PART_SIZE), start=1):
                end = min(start + COPY_PART_SIZE, size) - 1
                copied = await client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": source},
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            await client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
            return True
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                )
            if isinstance(exc, Exception) and _is(exc, _PRECONDITION | _CONFLICT):
                return False
            raise

    async def touch(self, sha256: str) -> None:
        """Refresh a blob's LastModified (a copy onto itself with new metadata)."""
        client = await self.client()
        key = self.blob_key(sha256)
        await client.copy_object(
            Bucket=self.bucket,
            Key=key,
            CopySource={"Bucket": self.bucket, "Key": key},
            MetadataDirective="REPLACE",
            Metadata={"touched": f"{time.time():.3f}"},
        )

    # -- BlobStore ------------------------------------------------------------------------

    async def read_store_id(self) -> str | None:
        async with _answering_503():
            client = await self.client()
            try:
                found = await client.get_object(Bucket=self.bucket, Key=self.store_id_key)
            except Exception as exc:
                if _is(exc, _NOT_FOUND):
                    return None
                raise
            async with found["Body"] as body:
                text = (await body.read()).decode("ascii", "replace").strip()
        return text or None

    async def claim_store_id(self, store_id: str) -> str:
        """Record `store_id` unless an id is there (a conditional PUT); return the one kept."""
        if not store_id or not store_id.isalnum():
            raise ValueError("a store id is letters and digits")
        async with _answering_503():
            await self.put_new(self.store_id_key, (store_id + "\n").encode("ascii"))
        found = await self.read_store_id()
        assert found is not None  # written just now, or by the claimer that won
        return found

    async def open_writer(self, *, max_bytes: int | None = None) -> BlobWriter:
        return S3Writer(self, max_bytes)

    async def put(
        self, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredBlob:
        """Stream `chunks` into the store; on any failure the partial upload is removed."""
        return await put_through_writer(self, chunks, max_bytes=max_bytes)

    async def open(self, sha256: str, start: int = 0, end: int | None = None) -> BlobReader:
        """Open bytes `start..end` (inclusive; `end=None` is the last byte). NotFoundError
        now, before any byte is sent, when the blob is missing."""
        if not is_sha256(sha256):
            raise NotFoundError("No such blob")
        if start < 0 or (end is not None and end < start):
            raise ValueError("invalid blob range")
        client = await self.client()
        options: dict[str, Any] = {"Bucket": self.bucket, "Key": self.blob_key(sha256)}
        if start > 0 or end is not None:
            options["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            found = await client.get_object(**options)
        except Exception as exc:
            if _is(exc, _NOT_FOUND):
                raise NotFoundError("No such blob") from exc
            if _is(exc, {"InvalidRange", "416"}):  # past the end: nothing to send
                await self.size(sha256)  # NotFoundError when it is missing after all
                return _S3Reader(None)
            raise _failure(exc) from exc
        return _S3Reader(found["Body"])

    async def _head(self, sha256: str) -> dict[str, Any] | None:
        if not is_sha256(sha256):
            return None
        client = await self.client()
        try:
            found: dict[str, Any] = await client.head_object(
                Bucket=self.bucket, Key=self.blob_key(sha256)
            )
        except Exception as exc:
            if _is(exc, _NOT_FOUND):
                return None
            raise _failure(exc) from exc
        return found

    async def size(self, sha256: str) -> int:
        found = await self._head(sha256)
        if found is None:
            raise NotFoundError("No such blob")
        return int(found["ContentLength"])

    async def exists(self, sha256: str) -> bool:
        return await self._head(sha256) is not None

    async def delete(self, sha256: str) -> bool:
        if not await self.exists(sha256):
            return False
        async with _answering_503():
            client = await self.client()
            await client.delete_object(Bucket=self.bucket, Key=self.blob_key(sha256))
        return True

    async def _list(self, prefix: str) -> AsyncIterator[dict[str, Any]]:
        async with _answering_503():
            client = await self.client()
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", ()):
                    yield item

    async def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        """Every stored blob with its LastModified, one listing page at a time."""
        prefix = self.blob_key("")
        async for item in self._list(prefix):
            name = str(item["Key"])[len(prefix) :]
            if is_sha256(name):
                yield BlobInfo(name, item["LastModified"].timestamp())

    async def iter_temp_files(self) -> AsyncIterator[TempFileInfo]:
        """Uploads under way (multipart uploads, named `<uuid>.<upload id in hex>`) and
        temp objects left by a writer that stopped between completing and copying."""
        prefix = self.temp_key("")
        async with _answering_503():
            client = await self.client()
            paginator = client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", ()):
                    name = str(upload["Key"])[len(prefix) :]
                    if "/" in name or "." in name:
                        continue
                    hex_id = str(upload["UploadId"]).encode().hex()
                    started = max(upload["Initiated"].timestamp(), _named_start(name))
                    yield TempFileInfo(f"{name}.{hex_id}", started)
        async for item in self._list(prefix):
            name = str(item["Key"])[len(prefix) :]
            if name and "/" not in name and "." not in name:
                started = max(item["LastModified"].timestamp(), _named_start(name))
                yield TempFileInfo(name, started)

    async def remove_temp_file(self, name: str) -> bool:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            return False
        async with _answering_503():
            return await self._remove_temp(name)

    async def _remove_temp(self, name: str) -> bool:
        client = await self.client()
        base, dot, hex_id = name.partition(".")
        if not base:
            return False
        key = self.temp_key(base)
        if dot:
            try:
                upload_id = bytes.fromhex(hex_id).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            try:
                await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception as exc:
                if _is(exc, _NOT_FOUND):
                    return False
                raise
            return True
        try:
            await client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is(exc, _NOT_FOUND):
                return False
            raise
        await client.delete_object(Bucket=self.bucket, Key=key)
        return True
