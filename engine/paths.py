"""Parse `/v3/crud/...` paths into a checked walk along the parent chain (SPEC 5).

`parse_crud_path(segments, registry)` is pure: it checks every step is a declared
parent→child pair and every id is well-formed, and says what the request addresses.
Whether the ids exist (and belong to the caller) is the resolver's job.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.errors import NotFoundError
from registry.descriptors import ObjectType, Registry, is_public_id

Target = Literal["collection", "item", "search", "schema", "index"]


class Step(msgspec.Struct, frozen=True):
    obj: ObjectType
    public_id: str


class CrudPath(msgspec.Struct, frozen=True):
    """`ancestors` are the (type, id) steps before the target type, outermost first."""

    target: Target
    obj: ObjectType | None
    ancestors: tuple[Step, ...] = ()
    public_id: str | None = None

    @property
    def parent(self) -> Step | None:
        return self.ancestors[-1] if self.ancestors else None


def parse_crud_path(segments: list[str], registry: Registry) -> CrudPath:
    """Interpret the (percent-decoded) segments of the URL after `/v3/crud/`.

    One trailing empty segment (a trailing slash) is ignored; any other empty segment,
    as in `event//x`, names nothing.
    """
    if segments and segments[-1] == "":
        segments = segments[:-1]
    if not segments:
        raise NotFoundError("No object type named in the path")
    if segments == ["schema"]:
        return CrudPath(target="index", obj=None)
    steps: list[Step] = []
    previous: ObjectType | None = None
    i = 0
    while i < len(segments):
        name = segments[i]
        obj = registry.get(name)
        if obj is None:
            raise NotFoundError(f"No object type {name!r}")
        if previous is not None and (obj.parent is None or obj.parent.target != previous.name):
            raise NotFoundError(f"{name!r} is not a child of {previous.name!r}")
        rest = segments[i + 1 :]
        if not rest:
            return CrudPath(target="collection", obj=obj, ancestors=tuple(steps))
        if len(rest) == 1 and rest[0] in ("search", "schema"):
            if rest[0] == "schema" and steps:
                raise NotFoundError("A schema is served at /v3/crud/{type}/schema")
            target: Target = "search" if rest[0] == "search" else "schema"
            return CrudPath(target=target, obj=obj, ancestors=tuple(steps))
        public_id = rest[0]
        if not is_public_id(public_id):
            raise NotFoundError(f"No {name} with that id")
        if len(rest) == 1:
            return CrudPath(target="item", obj=obj, ancestors=tuple(steps), public_id=public_id)
        steps.append(Step(obj=obj, public_id=public_id))
        previous = obj
        i += 2
    raise NotFoundError("No route matches the path")  # pragma: no cover - loop always returns
