"""`Idempotency-Key` for streaming actions (SPEC 6.1): replay the first answer of a request.

A key is scoped by principal and route. The stored record is the status, the JSON body and
a fingerprint of what was uploaded: each file part's name, SHA-256 and size, and the form
fields, so a retry re-encoded with another multipart boundary still matches. A retry is
parsed through `HashOnlySink` (hashed, never stored) and replays the first answer only when
its fingerprint is the same; anything else under the key is refused with 422. Records live
in the runtime cache for 24 h; a short-lived claim (`incr`) keeps two concurrent first
attempts from both writing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request

from engine.blobs import BlobWriter, StoredBlob
from engine.cache import CacheBackend
from engine.errors import BadRequestError, ConflictError, ValidationError
from engine.principal import Principal
from engine.redis_client import hash_tag
from engine.uploads import UploadResult

HEADER = "idempotency-key"
TTL_SECONDS = 24 * 3600
CLAIM_SECONDS = 600  # an upload that takes longer than this may be started a second time
MAX_KEY_LENGTH = 255


class _Record(msgspec.Struct, frozen=True):
    fingerprint: str
    status: int
    body: Any


@dataclass(frozen=True)
class Replay:
    status: int
    body: Any
    fingerprint: str

    def check(self, fingerprint: str) -> None:
        """422 unless the retried request carried what the first one did."""
        if fingerprint != self.fingerprint:
            raise ValidationError.single(
                "Idempotency-Key", "was used with a different request on this route"
            )


def upload_fingerprint(result: UploadResult) -> str:
    """What an upload carried, independent of its multipart encoding."""
    parts = [[f.filename, f.sha256, f.size] for f in result.files]
    fields = sorted(result.fields.items())
    return hashlib.sha256(msgspec.json.encode([parts, fields])).hexdigest()


class _HashWriter:
    """A blob writer that only hashes and counts: nothing reaches the disk."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._size += len(data)

    async def commit(self) -> StoredBlob:
        return StoredBlob(self._hash.hexdigest(), self._size, created=False)

    async def abort(self) -> None:
        return None


class HashOnlySink:
    """A `BlobSink` for parsing a retried upload: the parts are hashed, never stored."""

    async def open_writer(self, *, max_bytes: int | None = None) -> BlobWriter:
        return _HashWriter()

    async def discard(self, sha256s: Sequence[str]) -> None:
        return None


class Idempotency:
    """One request's idempotency state: `begin()` before any write, then `save()` or `abort()`."""

    def __init__(self, cache: CacheBackend, principal: Principal, route: str, key: str) -> None:
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise BadRequestError(
                f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters"
            )
        scope = f"{principal.kind}:{principal.subject}:{principal.account_id}:{route}:{key}"
        digest = hashlib.sha256(scope.encode()).hexdigest()
        self.cache = cache
        # One hash tag for both: in a Redis Cluster the claim and the record share a node.
        self.record_key = f"idem:{hash_tag(digest)}:r"
        self.claim_key = f"idem:{hash_tag(digest)}:c"
        self.claimed = False

    @classmethod
    def from_request(
        cls, cache: CacheBackend, principal: Principal, request: Request, route: str
    ) -> Idempotency | None:
        key = request.headers.get(HEADER)
        return None if key is None else cls(cache, principal, route, key)

    async def begin(self) -> Replay | None:
        """The stored answer (check its fingerprint), or None after claiming the key."""
        found = await self._load()
        if found is None:
            if await self.cache.incr(self.claim_key, CLAIM_SECONDS) > 1:
                found = await self._load()  # the other attempt may have just finished
                if found is None:
                    raise ConflictError("A request with this Idempotency-Key is in progress")
            else:
                self.claimed = True
                return None
        return Replay(found.status, found.body, found.fingerprint)

    async def save(self, fingerprint: str, status: int, body: Any) -> None:
        record = _Record(fingerprint, status, body)
        await self.cache.set(self.record_key, msgspec.json.encode(record), TTL_SECONDS)
        await self.release()

    async def release(self) -> None:
        """Let another attempt run (after a failure, or once the record is saved)."""
        if self.claimed:
            self.claimed = False
            await self.cache.delete(self.claim_key)

    async def _load(self) -> _Record | None:
        raw = await self.cache.get(self.record_key)
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=_Record)
        except msgspec.DecodeError:
            return None  # a corrupt entry is treated as absent rather than failing the request
