"""`Idempotency-Key` for streaming actions (SPEC 6.1): replay the first answer of a request.

A key is scoped by principal and route. The stored record is the status, the JSON body and
a request fingerprint. The raw body of a streamed upload is not available before it is
consumed, so the fingerprint is sha256(method, route, Content-Length, media type without
its `boundary` parameter): a retry of the same request matches, a clearly different request
(other size or type) is refused with 422. Records live in the runtime cache for 24 h; a
short-lived claim (`incr`) keeps two concurrent first attempts from both writing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request

from engine.cache import CacheBackend
from engine.errors import BadRequestError, ConflictError, ValidationError
from engine.principal import Principal

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


def fingerprint(request: Request, route: str) -> str:
    """The request's identity without its (unread) body; see the module docstring."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    length = request.headers.get("content-length", "")
    text = "\n".join((request.method, route, length, media_type))
    return hashlib.sha256(text.encode()).hexdigest()


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
        self.record_key = f"idem:r:{digest}"
        self.claim_key = f"idem:c:{digest}"
        self.claimed = False

    @classmethod
    def from_request(
        cls, cache: CacheBackend, principal: Principal, request: Request, route: str
    ) -> Idempotency | None:
        key = request.headers.get(HEADER)
        return None if key is None else cls(cache, principal, route, key)

    async def begin(self, fingerprint: str) -> Replay | None:
        """The stored answer to replay, or None after claiming the key for this attempt."""
        found = await self._load()
        if found is None:
            if await self.cache.incr(self.claim_key, CLAIM_SECONDS) > 1:
                found = await self._load()  # the other attempt may have just finished
                if found is None:
                    raise ConflictError("A request with this Idempotency-Key is in progress")
            else:
                self.claimed = True
                return None
        if found.fingerprint != fingerprint:
            raise ValidationError.single(
                "Idempotency-Key", "was used with a different request on this route"
            )
        return Replay(found.status, found.body)

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
