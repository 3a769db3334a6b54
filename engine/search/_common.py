"""Shared by the search parsers: error collection, paths into the request, and which
relations a role may name.

Errors are collected up to `MAX_ERRORS`; the one that reaches the cap stops the parse at
once (`StopParsing`), so no work is spent on mistakes nobody will see. `collect()` runs a
parse and turns what was collected into one `ValidationError` (422).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from engine.errors import ErrorDetail, ValidationError
from registry.descriptors import ObjectType, Registry, role_at_least
from registry.hints import MAX_ERRORS

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
T = TypeVar("T")


def join_path(path: str, key: object) -> str:
    """`path.key`, or `path["odd key"]` when the key is not a plain name (truncated)."""
    if isinstance(key, str) and _NAME_RE.fullmatch(key) and len(key) <= 100:
        return f"{path}.{key}" if path else key
    text = key if isinstance(key, str) else repr(key)
    quoted = json.dumps(text[:100] + ("…" if len(text) > 100 else ""), ensure_ascii=False)
    return f"{path}[{quoted}]"


class StopParsing(Exception):
    """The parse stops here: the error cap is reached or a size limit is exceeded."""


class Errors:
    def __init__(self) -> None:
        self.items: list[ErrorDetail] = []

    def add(self, path: str, message: str) -> None:
        """Record a problem; the `MAX_ERRORS`th one stops the parse."""
        self.items.append(ErrorDetail(path, message))
        if len(self.items) >= MAX_ERRORS:
            raise StopParsing

    def stop(self, path: str, message: str) -> NoReturn:
        """Record a problem that makes going on pointless (a size limit) and stop."""
        self.items.append(ErrorDetail(path, message))
        raise StopParsing

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationError(self.items)


def collect(parse: Callable[[Errors], T]) -> T:
    """`parse(errors)`'s result, or a `ValidationError` with what it collected."""
    errors = Errors()
    try:
        result = parse(errors)
    except StopParsing:
        raise ValidationError(errors.items) from None
    errors.raise_if_any()
    return result


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
