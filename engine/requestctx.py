"""Per-request context (request id, principal) carried in context variables for logging."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("aether_request_id", default=None)
account_var: ContextVar[str | None] = ContextVar("aether_account", default=None)
principal_var: ContextVar[str | None] = ContextVar("aether_principal", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()
