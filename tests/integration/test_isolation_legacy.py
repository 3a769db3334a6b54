"""Tenant isolation over the legacy routes (`/crud`, `/v2/crud`), built from the registry.

The same matrix as `test_isolation.py`, aimed through the legacy prefixes: both tenants get
one object of every type, then tenant A reads, updates (PATCH and the legacy PUT) and
deletes B's objects, creates objects whose parent or references are B's, lists and searches
with filters naming B's ids, and includes relations. Every denial must answer exactly as a
random well-formed id does, B's rows must be unchanged, and no 2xx answer to A may carry any
of B's ids, an integer id or a secret. A new model is covered without touching this file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.cache import CacheBackend
from engine.legacy.calls import LEGACY_PREFIXES
from registry.descriptors import ObjectType, Registry
from tests.integration.conftest import Api, make_api, make_settings
from tests.integration.test_isolation import (
    PROBLEM_JSON,
    Call,
    Recorder,
    Seeded,
    _json,
    _mentions,
    patch_body,
    random_id,
    relation_filters,
    sample_body,
    scan_json,
    seed,
    shape,
    snapshot,
)

LEGACY_HEADERS = ("deprecation", "sunset", "link")


@pytest.fixture
async def api(
    database_url: str, tmp_path: Path, app_cache: CacheBackend | None
) -> AsyncIterator[Api]:
    settings = make_settings(database_url, tmp_path, legacy_routes=True)
    made = await make_api(settings, app_cache)
    async with made.client:
        yield made
    await made.runtime.close()


def legacy_item_calls(obj: ObjectType, prefix: str, public_id: str) -> list[Call]:
    url = f"{prefix}/{obj.name}/{public_id}"
    calls = [Call("GET", url)]
    if obj.permissions.update:
        calls += [Call("PATCH", url, patch_body(obj)), Call("PUT", url, patch_body(obj))]
    if obj.permissions.delete:
        calls.append(Call("DELETE", url))
    return calls


def legacy_shapes(obj: ObjectType, any_id: str) -> list[Call]:
    """Every legacy route shape of `obj` (the id a placeholder): for the 401 matrix."""
    calls: list[Call] = []
    for prefix, label in LEGACY_PREFIXES.items():
        calls.append(Call("GET", f"{prefix}/{obj.name}"))
        if label == "v2":
            calls.append(Call("POST", f"{prefix}/{obj.name}/search", {}))
        if obj.permissions.create:
            calls.append(Call("POST", f"{prefix}/{obj.name}", {}))
        calls += legacy_item_calls(obj, prefix, any_id)
    return calls


def foreign_bodies(
    reg: Registry, obj: ObjectType, mine: Seeded, theirs: Seeded
) -> list[tuple[str, dict[str, Any]]]:
    """Create bodies valid for A except one parent or reference field, which names B's object."""
    base = sample_body(obj, mine.ids)
    if base is None:
        return []
    out = []
    for rel in (obj.parent, *obj.references):
        if rel is None or rel.target == "account" or rel.target not in theirs.ids:
            continue
        out.append((rel.field, {**base, rel.field: theirs.ids[rel.target]}))
    return out


def missing_headers(r: Any) -> list[str]:
    return [h for h in LEGACY_HEADERS if h not in r.headers]


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any database work
async def test_no_credentials_is_401_on_every_legacy_route_shape(api: Api) -> None:
    failures: list[str] = []
    for obj in api.runtime.registry:
        for call in legacy_shapes(obj, random_id()):
            for headers in ({}, {"X-API-Key": "ae_not_a_key"}, {"Authorization": "Bearer x.y.z"}):
                r = await api.client.request(
                    call.method, call.path, json=call.body, headers=headers
                )
                ok = (
                    r.status_code == 401
                    and "www-authenticate" in r.headers
                    and r.headers.get("content-type") == PROBLEM_JSON
                    and not missing_headers(r)
                )
                if not ok:
                    failures.append(f"{call.method} {call.path} {list(headers)}: {r.status_code}")
    assert not failures, "\n".join(failures)


async def test_cross_tenant_matrix_over_legacy_routes(api: Api) -> None:
    mine, theirs = await seed(api, api.a), await seed(api, api.b)
    before = await snapshot(api, theirs)
    b_ids = set(theirs.ids.values())
    rec = Recorder(api)
    failures = await legacy_path_matrix(api, rec, mine, theirs)
    failures += await legacy_search_matrix(api, rec, mine, theirs)
    after = await snapshot(api, theirs)
    failures += [
        f"B's {n} changed: {before[n]} -> {after[n]}" for n in before if before[n] != after[n]
    ]
    leaks = [
        w for w, body in rec.bodies if w.split()[-1].startswith("2") and _mentions(body, b_ids)
    ]
    failures += [f"B's id in a 2xx answer to A: {w}" for w in leaks]
    for where, body in rec.bodies:
        scan_json(body, where, failures)
    assert len(rec.bodies) > 100, "the matrix ran"
    assert not failures, "\n".join(failures)


async def legacy_path_matrix(api: Api, rec: Recorder, mine: Seeded, theirs: Seeded) -> list[str]:
    """Reads, updates (PATCH and PUT) and deletes of B's objects, and creates naming B's
    parents and references, through both legacy prefixes, as A."""
    reg = api.runtime.registry
    b_ids = set(theirs.ids.values())
    h = api.a.headers("owner")
    failures: list[str] = []

    async def expect_hidden(call: Call, status: int = 404) -> Any:
        got = await rec.send(call, h)
        control = await rec.send(call.replaced({b: random_id() for b in b_ids}), h)
        if got.status_code != status or shape(got) != shape(control) or missing_headers(got):
            failures.append(f"{call.method} {call.path}: {shape(got)} != {shape(control)}")
        return got

    for obj in reg:
        for prefix in LEGACY_PREFIXES:
            for call in legacy_item_calls(obj, prefix, theirs.ids[obj.name]):
                await expect_hidden(call)
            if not obj.permissions.create:
                continue
            for field, body in foreign_bodies(reg, obj, mine, theirs):
                got = await expect_hidden(Call("POST", f"{prefix}/{obj.name}", body), 422)
                if not any(e["path"] == field for e in got.json().get("errors", [])):
                    failures.append(f"POST {prefix}/{obj.name} with B's {field}: no error names it")
    return failures


async def legacy_search_matrix(api: Api, rec: Recorder, mine: Seeded, theirs: Seeded) -> list[str]:
    """Filters naming B's ids find nothing (total 0) in legacy lists and V2 searches;
    includes from A stay in A."""
    reg = api.runtime.registry
    h = api.a.headers("owner")
    failures: list[str] = []
    for obj in reg:
        url = f"/v2/crud/{obj.name}/search"
        own = list(relation_filters(reg, obj, mine.ids))
        foreign = list(relation_filters(reg, obj, theirs.ids))
        for a_filter, b_filter in zip(own, foreign, strict=True):
            r = await rec.send(Call("POST", url, {"filter": a_filter, "count": True}), h)
            if r.status_code != 200 or r.json()["total"] < 1:
                failures.append(f"{obj.name} {a_filter}: control found nothing: {r.text}")
            r = await rec.send(Call("POST", url, {"filter": b_filter, "count": True}), h)
            body = r.json()
            if r.status_code != 200 or body.get("data") != [] or body.get("total") != 0:
                failures.append(f"{obj.name} {b_filter}: {r.status_code} {r.text}")
            for prefix in LEGACY_PREFIXES:
                query = f"{prefix}/{obj.name}?count=true&offset=0&filter=" + _json(b_filter)
                listed = await rec.send(Call("GET", query), h)
                if listed.status_code != 200 or listed.json().get("total") != 0:
                    failures.append(f"GET {query}: {listed.text}")
        relations = [r.name for r in (obj.parent, *obj.references, *obj.children) if r]
        if relations:
            r = await rec.send(Call("POST", url, {"include": relations, "count": True}), h)
            if r.status_code != 200 or r.json()["total"] < 1:
                failures.append(f"{obj.name} include {relations}: {r.status_code} {r.text}")
            for prefix in LEGACY_PREFIXES:
                listed = await rec.send(
                    Call("GET", f"{prefix}/{obj.name}?include=" + ",".join(relations)), h
                )
                if listed.status_code != 200 or missing_headers(listed):
                    failures.append(f"GET {prefix}/{obj.name} include: {listed.text}")
    return failures
