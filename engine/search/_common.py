"""Shared by the search parsers: error collection, paths into the request, hints, and
which relations a role may name.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from typing import Any

from engine.errors import ErrorDetail, ValidationError
from registry.descriptors import ObjectType, Registry, role_at_least

MAX_ERRORS = 50  # a body with thousands of mistakes gets the first fifty
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def join_path(path: str, key: object) -> str:
    """`path.key`, or `path["odd key"]` when the key is not a plain name (truncated)."""
    if isinstance(key, str) and _NAME_RE.fullmatch(key) and len(key) <= 100:
        return f"{path}.{key}" if path else key
    text = key if isinstance(key, str) else repr(key)
    quoted = json.dumps(text[:100] + ("…" if len(text) > 100 else ""), ensure_ascii=False)
    return f"{path}[{quoted}]"


def hint(name: object, candidates: Iterable[str]) -> str:
    if not isinstance(name, str):
        return ""
    match = difflib.get_close_matches(name[:100], list(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""


class Errors:
    def __init__(self) -> None:
        self.items: list[ErrorDetail] = []

    def add(self, path: str, message: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append(ErrorDetail(path, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationError(self.items)


def visible_relation(obj: ObjectType, name: str, registry: Registry, role: str | None) -> Any:
    """The relation `name` of `obj` when its target is served and readable by `role`."""
    rel = obj.relation(name)
    if rel is None:
        return None
    target = registry.get(rel.target)
    if target is None or (
        role is not None and not role_at_least(role, target.permissions.read_role)
    ):
        return None
    return rel


def relation_names(obj: ObjectType, registry: Registry, role: str | None) -> list[str]:
    names = [r.name for r in (obj.parent, *obj.references, *obj.children) if r is not None]
    return [n for n in names if visible_relation(obj, n, registry, role) is not None]
