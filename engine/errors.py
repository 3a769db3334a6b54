"""The error tree every failure is expressed in; `problems.py` renders it as RFC 9457.

AetherError (500)
├── BadRequestError (400)         malformed JSON, forged cursor
├── UnauthorizedError (401)       missing or failed credentials
├── ForbiddenError (403)          role too low
├── NotFoundError (404)           unknown type or id, or another account's object
├── MethodNotAllowedError (405)   carries `Allow`
├── ConflictError (409)           unique violation, blocking children
├── PreconditionFailedError (412) stale If-Match
├── PayloadTooLargeError (413)
├── UnsupportedMediaTypeError (415)
├── RangeNotSatisfiableError (416)
├── ValidationError (422)         carries `errors: [{path, message}]`
├── PreconditionRequiredError (428)
├── RateLimitedError (429)        carries `Retry-After`
└── ServiceUnavailableError (503) carries `Retry-After`
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice

from registry.hints import MAX_ERRORS

PROBLEM_BASE = "https://aether.dev/problems/"


class ErrorDetail(dict[str, str]):
    """One entry of a problem's `errors`: a path into the request and a message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path=path, message=message)


class AetherError(Exception):
    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Iterable[Mapping[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = [dict(e) for e in errors]
        self.headers = dict(headers or {})

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


class BadRequestError(AetherError):
    status, slug, title = 400, "bad-request", "Bad request"


class UnauthorizedError(AetherError):
    status, slug, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str | None = None, **kwargs: object) -> None:
        super().__init__(detail or "Missing or invalid credentials", **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="aether", ApiKey realm="aether"')


class ForbiddenError(AetherError):
    status, slug, title = 403, "forbidden", "Forbidden"


class NotFoundError(AetherError):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowedError(AetherError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"

    def __init__(self, allow: Iterable[str], detail: str | None = None) -> None:
        super().__init__(detail, headers={"Allow": ", ".join(allow)})


class ConflictError(AetherError):
    status, slug, title = 409, "conflict", "Conflict"


class PreconditionFailedError(AetherError):
    status, slug, title = 412, "precondition-failed", "Precondition failed"


class PayloadTooLargeError(AetherError):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaTypeError(AetherError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class RangeNotSatisfiableError(AetherError):
    status, slug, title = 416, "range-not-satisfiable", "Range not satisfiable"


class ValidationError(AetherError):
    """A 422 listing at most `MAX_ERRORS` problems, whoever collected them."""

    status, slug, title = 422, "validation-error", "Validation failed"

    def __init__(
        self,
        errors: Iterable[Mapping[str, str]],
        detail: str | None = None,
    ) -> None:
        errors = list(islice(errors, MAX_ERRORS))
        if detail is None:
            detail = "; ".join(_entry(e) for e in errors[:5]) or None
        super().__init__(detail, errors=errors)

    @classmethod
    def single(cls, path: str, message: str) -> ValidationError:
        return cls([ErrorDetail(path, message)])


def _entry(error: Mapping[str, str]) -> str:
    """`path: message`, or the message alone when it is about the whole body (no path)."""
    return f"{error['path']}: {error['message']}" if error["path"] else error["message"]


class PreconditionRequiredError(AetherError):
    status, slug, title = 428, "precondition-required", "Precondition required"


class RateLimitedError(AetherError):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailableError(AetherError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"

    def __init__(self, detail: str | None = None, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


#: What a request, `/readyz` and the start-up log say when the schema lags the models.
NOT_MIGRATED = "The database is not migrated to this version: run `aether migrate`"


class InsufficientStorageError(AetherError):
    status, slug, title = 507, "insufficient-storage", "Insufficient storage"
