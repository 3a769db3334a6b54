"""Who is calling: the account and role every request is scoped and checked by."""

from __future__ import annotations

from typing import Literal

import msgspec

from registry.descriptors import role_at_least

PrincipalKind = Literal["user", "api_key"]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """A verified caller.

    `account_id` is the internal key used in SQL (None only for a system key);
    `account_public_id` is what responses show. `subject` is the public id of the user or
    api key. `role` is one of viewer, editor, admin, owner, or system.
    """

    kind: PrincipalKind
    subject: str
    account_id: int | None
    account_public_id: str | None
    role: str

    @property
    def is_system(self) -> bool:
        return self.role == "system"

    def has_role(self, minimum: str) -> bool:
        return role_at_least(self.role, minimum)

    @property
    def log_name(self) -> str:
        return f"{self.kind}:{self.subject}"
