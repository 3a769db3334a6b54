"""Check `sort`, `fields` and `include` (body arrays or the list endpoint's comma-separated
query parameters) against an object type. Pure; 422 with the path of each bad entry.
"""

from __future__ import annotations

from engine.search._common import Errors, collect, relation_names, visible_relation
from engine.search.nodes import Include, SortKey
from registry.descriptors import ObjectType, Registry, Relation
from registry.hints import did_you_mean
from registry.searchschema import MAX_INCLUDE_DEPTH, MAX_NAMES


def names_of(value: object, path: str, errors: Errors) -> list[tuple[str, str]]:
    """(name, path) pairs from a list of strings, or from a comma-separated string."""
    if isinstance(value, str):
        if value.count(",") >= MAX_NAMES:
            errors.stop(path, f"at most {MAX_NAMES} entries")
        parts = [p.strip() for p in value.split(",")]
        return [(p, path) for p in parts if p]
    if not isinstance(value, list):
        errors.add(path, "expected an array of strings")
        return []
    if len(value) > MAX_NAMES:
        errors.stop(path, f"at most {MAX_NAMES} entries")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append((item, f"{path}[{i}]"))
        else:
            errors.add(f"{path}[{i}]", "expected a string")
    return out


def sort_of(value: object, obj: ObjectType, path: str, errors: Errors) -> tuple[SortKey, ...]:
    sortable = [f.name for f in obj.fields if f.sortable and not f.write_only]
    keys: list[SortKey] = []
    seen: set[str] = set()
    for name, kpath in names_of(value, path, errors):
        descending = name.startswith("-")
        bare = name[1:] if descending else name
        field = obj.field(bare)
        if field is None or field.write_only:
            errors.add(kpath, f"unknown sort field {bare[:100]!r}{did_you_mean(bare, sortable)}")
        elif not field.sortable:
            errors.add(kpath, f"{bare} is not sortable; sortable fields: " + ", ".join(sortable))
        elif bare in seen:
            errors.add(kpath, f"{bare} is sorted on twice")
        else:
            seen.add(bare)
            keys.append(SortKey(field, descending))
    return tuple(keys)


def parse_sort(
    value: list[str] | str, obj: ObjectType, *, path: str = "sort"
) -> tuple[SortKey, ...]:
    """`["-starts_at", "name"]` or `"-starts_at,name"` as sort keys on sortable fields."""
    result: tuple[SortKey, ...] = collect(lambda errors: sort_of(value, obj, path, errors))
    return result


def default_sort(obj: ObjectType) -> tuple[SortKey, ...]:
    """The type's declared default sort (checked by the registry at start-up)."""
    keys = []
    for name in obj.default_sort:
        field = obj.field(name.lstrip("-"))
        if field is not None:
            keys.append(SortKey(field, name.startswith("-")))
    return tuple(keys)


def fields_of(value: object, obj: ObjectType, path: str, errors: Errors) -> tuple[str, ...]:
    readable = [f.name for f in obj.fields if f.is_readable]
    names = ["id"]
    for name, npath in names_of(value, path, errors):
        if name not in readable:
            errors.add(npath, f"unknown field {name[:100]!r}{did_you_mean(name, readable)}")
        elif name not in names:
            names.append(name)
    return tuple(names)


def parse_fields(
    value: list[str] | str, obj: ObjectType, *, path: str = "fields"
) -> tuple[str, ...]:
    """Readable field names to return, `id` first and always present."""
    result: tuple[str, ...] = collect(lambda errors: fields_of(value, obj, path, errors))
    return result


def include_of(
    value: object, obj: ObjectType, registry: Registry, path: str, role: str | None, errors: Errors
) -> tuple[Include, ...]:
    out: dict[str, Include] = {}
    for dotted, ipath in names_of(value, path, errors):
        segments = dotted.split(".")
        if len(segments) > MAX_INCLUDE_DEPTH:
            errors.add(ipath, f"includes nest at most {MAX_INCLUDE_DEPTH} levels")
            continue
        current, chain = obj, []
        for segment in segments:
            rel: Relation | None = visible_relation(current, segment, registry, role)
            if rel is None:
                tip = did_you_mean(segment, relation_names(current, registry, role))
                errors.add(ipath, f"unknown relation {segment[:100]!r} on {current.name}{tip}")
                break
            chain.append(rel)
            current = registry[rel.target]
        else:
            for n in range(1, len(chain) + 1):  # `a.b` brings `a` with it
                key = ".".join(r.name for r in chain[:n])
                out.setdefault(key, Include(key, tuple(chain[:n])))
    return tuple(out.values())


def parse_include(
    value: list[str] | str,
    obj: ObjectType,
    registry: Registry,
    *,
    path: str = "include",
    role: str | None = None,
) -> tuple[Include, ...]:
    """Dotted relation paths (children and to-one relations), each prefix listed once,
    parents before their nested includes."""
    result: tuple[Include, ...] = collect(
        lambda errors: include_of(value, obj, registry, path, role, errors)
    )
    return result
