"""Tenant isolation (SPEC 4, 5; RELIABILITY S1, S2, S5, S9), as a matrix built from the registry.

Both tenants get one object of every type (created through the API where CRUD create is
offered, otherwise found by listing). Then tenant A aims every route shape at B's objects:
flat and nested reads and writes, search filters and includes. Every denial must be the
404 a random well-formed id gets, B's rows must be unchanged, and no 2xx answer to A may
carry any of B's ids. A new model is covered without touching this file.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from registry.descriptors import FieldInfo, ObjectType, Registry
from tests.integration.conftest import Api, Tenant

PROBLEM_JSON = "application/problem+json"
SECRET_KEYS = frozenset({"secret_hash", "password_hash", "password"})
#: Fields whose value changes when the owner merely uses the object.
VOLATILE = frozenset({"last_used_at"})
UPLOAD_BYTES = b"isolation matrix file\n"


def random_id() -> str:
    return secrets.token_urlsafe(16)[:22]


# -- sample data from the registry ----------------------------------------------------------


def sample_value(f: FieldInfo, ids: dict[str, str]) -> Any:
    """A valid value for field `f`; `...` when it needs an object that does not exist yet."""
    token = "s" + secrets.token_hex(5)
    if f.kind == "reference":
        return ids.get(f.references or "", ...)
    if f.kind == "enum":
        return (f.enum or ("",))[0]
    if f.kind == "datetime":
        return "2027-03-14T10:00:00Z"
    if f.kind == "date":
        return "2027-03-14"
    if f.kind in ("integer", "number", "decimal"):
        low = f.minimum if f.minimum is not None else 1
        value = max(low, 1) if f.maximum is None or f.maximum >= 1 else low
        return str(value) if f.kind == "decimal" else int(value) if f.kind == "integer" else value
    if f.kind == "boolean":
        return True
    if f.kind == "object":
        return {}
    if f.kind == "array":
        return []
    if f.format == "email":
        return f"{token}@example.test"
    if f.format == "iana-timezone":
        return "UTC"
    text = token.ljust(f.min_length or 0, "x")
    return text[: f.max_length] if f.max_length else text


def sample_body(obj: ObjectType, ids: dict[str, str]) -> dict[str, Any] | None:
    """A create body with every required field, or None while a reference is missing."""
    body: dict[str, Any] = {}
    for f in obj.fields:
        if not f.required or f.read_only:
            continue
        value = sample_value(f, ids)
        if value is ...:
            return None
        body[f.name] = value
    return body


def patch_body(obj: ObjectType) -> dict[str, Any]:
    """A small valid PATCH body (one plain writable text field), or `{}`."""
    for f in obj.fields:
        if (
            f.kind == "string"
            and not (f.read_only or f.write_only or f.write_once)
            and f.pattern is None
            and f.format is None
        ):
            return {f.name: "changed by someone"}
    return {}


@dataclass
class Seeded:
    """One object per type of one tenant: its full JSON by type name."""

    tenant: Tenant
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ids(self) -> dict[str, str]:
        return {name: str(o["id"]) for name, o in self.objects.items()}


async def seed(api: Api, tenant: Tenant) -> Seeded:
    """Create (or find) one object of every registered type in `tenant`'s account."""
    reg: Registry = api.runtime.registry
    h = tenant.headers("owner")
    seeded = Seeded(tenant)
    account = await api.client.get(f"/v3/crud/account/{tenant.account_id}", headers=h)
    assert account.status_code == 200, account.text
    seeded.objects["account"] = account.json()

    async def create_pass() -> None:
        for obj in reg:
            if obj.name in seeded.objects or not obj.permissions.create:
                continue
            body = sample_body(obj, seeded.ids)
            if body is None:
                continue
            r = await api.client.post(f"/v3/crud/{obj.name}", json=body, headers=h)
            assert r.status_code == 201, (obj.name, r.text)
            seeded.objects[obj.name] = r.json()

    await create_pass()
    # File rows only come from uploads; an upload also makes the event's file link.
    up = await api.client.post(
        f"/v3/action/event/{seeded.ids['event']}/upload",
        files=[("file", ("matrix.txt", UPLOAD_BYTES, "text/plain"))],
        headers=h,
    )
    assert up.status_code == 201, up.text
    seeded.objects.setdefault("file", up.json()["files"][0])
    await create_pass()
    for obj in reg:
        if obj.name in seeded.objects:
            continue
        listed = await api.client.get(f"/v3/crud/{obj.name}?limit=1", headers=h)
        assert listed.status_code == 200, listed.text
        rows = listed.json()["data"]
        assert rows, f"seed(): no way to make a {obj.name!r}; teach the matrix how"
        seeded.objects[obj.name] = rows[0]
    return seeded


# -- route shapes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None

    def replaced(self, mapping: dict[str, str]) -> Call:
        path = self.path
        for old, new in mapping.items():
            path = path.replace(old, new)
        return Call(self.method, path, self.body)


def chain(reg: Registry, seeded: Seeded, obj: ObjectType, obj_json: dict[str, Any]) -> list[str]:
    """`type/id` steps from the root ancestor down to (not including) `obj`, from the data."""
    steps: list[str] = []
    current, data = obj, obj_json
    while current.parent is not None:
        parent = reg[current.parent.target]
        parent_id = str(data[current.parent.field])
        steps.insert(0, f"{parent.name}/{parent_id}")
        data = seeded.objects[parent.name]
        assert data["id"] == parent_id, "seeded objects form one chain per tenant"
        current = parent
    return steps


def prefixes(steps: list[str]) -> Iterator[str]:
    """Every ancestor chain a nested path may start from: `a/x/b/y/`, `b/y/`, and none."""
    for i in range(len(steps) + 1):
        yield "".join(s + "/" for s in steps[i:])


def item_calls(obj: ObjectType, prefix: str, public_id: str) -> list[Call]:
    base = f"/v3/crud/{prefix}{obj.name}"
    calls = [Call("GET", f"{base}/{public_id}")]
    if obj.permissions.update:
        calls.append(Call("PATCH", f"{base}/{public_id}", patch_body(obj)))
    if obj.permissions.delete:
        calls.append(Call("DELETE", f"{base}/{public_id}"))
    return calls


def shapes(reg: Registry, obj: ObjectType, any_id: str) -> list[Call]:
    """Every route shape of `obj` (ids are placeholders): for the no-credentials matrix."""
    steps = [f"{a.name}/{any_id}" for a in reversed(reg.ancestors(obj.name))]
    calls = [Call("GET", f"/v3/crud/{obj.name}/schema"), Call("GET", "/v3/crud/schema")]
    for prefix in prefixes(steps):
        base = f"/v3/crud/{prefix}{obj.name}"
        calls += [Call("GET", base), Call("POST", f"{base}/search", {})]
        if obj.permissions.create:
            calls.append(Call("POST", base, {}))
        calls += item_calls(obj, prefix, any_id)
    return calls


# -- the response checks ----------------------------------------------------------------------


def scan_json(value: Any, where: str, problems: list[str]) -> None:
    """No integer ids and no secrets anywhere in a JSON body (S5)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in SECRET_KEYS:
                problems.append(f"{where}: secret key {key!r} in a response")
            is_id = key == "id" or key.endswith("_id")
            if is_id and item is not None and not isinstance(item, str):
                problems.append(f"{where}: {key}={item!r} is not a public id")
            scan_json(item, where, problems)
    elif isinstance(value, list):
        for item in value:
            scan_json(item, where, problems)


def shape(r: httpx.Response) -> tuple[Any, ...]:
    """What a denial may be compared on: status, body minus per-request fields, header names."""
    body = r.json() if r.content else None
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in ("request_id", "instance")}
    names = sorted({k.lower() for k in r.headers} - {"x-request-id"})
    return r.status_code, r.headers.get("content-type"), body, names


class Recorder:
    """Sends calls and collects every JSON body for the exposure scan."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.bodies: list[tuple[str, Any]] = []

    async def send(self, call: Call, headers: dict[str, str]) -> httpx.Response:
        r = await self.api.client.request(
            call.method,
            call.path,
            json=call.body if call.body is not None else None,
            headers=headers,
        )
        if r.content and "json" in r.headers.get("content-type", ""):
            self.bodies.append((f"{call.method} {call.path} -> {r.status_code}", r.json()))
        return r


async def snapshot(api: Api, seeded: Seeded) -> dict[str, dict[str, Any]]:
    """Every seeded object as its owner reads it now (volatile bookkeeping left out)."""
    h = seeded.tenant.headers("owner")
    out: dict[str, dict[str, Any]] = {}
    for name, obj in seeded.objects.items():
        r = await api.client.get(f"/v3/crud/{name}/{obj['id']}", headers=h)
        assert r.status_code == 200, (name, r.text)
        out[name] = {k: v for k, v in r.json().items() if k not in VOLATILE}
    return out


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any database work
async def test_no_credentials_is_401_on_every_route_shape(api: Api) -> None:
    reg = api.runtime.registry
    failures: list[str] = []
    for obj in reg:
        for call in shapes(reg, obj, random_id()):
            for headers in ({}, {"X-API-Key": "ae_not_a_key"}, {"Authorization": "Bearer x.y.z"}):
                r = await api.client.request(
                    call.method, call.path, json=call.body, headers=headers
                )
                ok = (
                    r.status_code == 401
                    and "www-authenticate" in r.headers
                    and r.headers.get("content-type") == PROBLEM_JSON
                    and r.json().get("status") == 401
                )
                if not ok:
                    failures.append(f"{call.method} {call.path} {list(headers)}: {r.status_code}")
    assert not failures, "\n".join(failures)


async def test_cross_tenant_matrix(api: Api) -> None:
    """S1/S2/S5/S9: every route shape, search filter and include, from A at B's objects."""
    mine, theirs = await seed(api, api.a), await seed(api, api.b)
    before = await snapshot(api, theirs)
    b_ids = set(theirs.ids.values())
    rec = Recorder(api)
    failures = await path_matrix(api, rec, mine, theirs)
    failures += await search_matrix(api, rec, mine, theirs)
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
    failures += await planted_matrix(api, mine, theirs)
    assert not failures, "\n".join(failures)


async def path_matrix(api: Api, rec: Recorder, mine: Seeded, theirs: Seeded) -> list[str]:
    """Flat and nested reads and writes of B's objects (and under B's parents) as A."""
    reg = api.runtime.registry
    b_ids = set(theirs.ids.values())
    h = api.a.headers("owner")
    failures: list[str] = []

    async def expect_hidden(call: Call) -> None:
        """A's call on B's ids must answer exactly as with random ids in their place."""
        got = await rec.send(call, h)
        control = await rec.send(call.replaced({b: random_id() for b in b_ids}), h)
        if got.status_code != 404 or shape(got) != shape(control):
            failures.append(f"{call.method} {call.path}: {shape(got)} != {shape(control)}")

    for obj in reg:
        b_obj = theirs.objects[obj.name]
        b_steps = chain(reg, theirs, obj, b_obj)
        a_steps = chain(reg, mine, obj, mine.objects[obj.name])
        for prefix in prefixes(b_steps):
            for call in item_calls(obj, prefix, b_obj["id"]):
                await expect_hidden(call)
            if prefix:  # B's parent: its collection, search and create are hidden too
                base = f"/v3/crud/{prefix}{obj.name}"
                await expect_hidden(Call("GET", base))
                await expect_hidden(Call("POST", f"{base}/search", {}))
                if obj.permissions.create:
                    body = sample_body(obj, mine.ids) or {}
                    body.pop(obj.parent.field if obj.parent else "", None)
                    await expect_hidden(Call("POST", base, body))
        for prefix in list(prefixes(a_steps))[:-1]:  # A's own parents, B's child
            for call in item_calls(obj, prefix, b_obj["id"]):
                await expect_hidden(call)
    return failures


def _mentions(body: Any, ids: set[str]) -> bool:
    if isinstance(body, dict):
        return any(_mentions(v, ids) for v in body.values())
    if isinstance(body, list):
        return any(_mentions(v, ids) for v in body)
    return isinstance(body, str) and body in ids


def relation_filters(
    reg: Registry, obj: ObjectType, ids: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """Filters naming the tenant's objects: by id, by each reference field, through relations."""
    yield {"id": ids[obj.name]}
    for f in obj.fields:
        if f.kind == "reference" and f.references in ids:
            yield {f.name: ids[f.references]}
    for rel in (obj.parent, *obj.references):
        if rel is not None and rel.target in ids:
            yield {rel.name: {"id": ids[rel.target]}}
    for rel in obj.children:
        yield {rel.name: {"_some": {"id": ids[rel.target]}}}


async def search_matrix(api: Api, rec: Recorder, mine: Seeded, theirs: Seeded) -> list[str]:
    """Search filters naming B's ids find nothing (total 0); includes from A stay in A."""
    reg = api.runtime.registry
    h = api.a.headers("owner")
    failures: list[str] = []
    for obj in reg:
        url = f"/v3/crud/{obj.name}/search"
        own = list(relation_filters(reg, obj, mine.ids))
        foreign = list(relation_filters(reg, obj, theirs.ids))
        for a_filter, b_filter in zip(own, foreign, strict=True):
            # The same filter with A's own ids finds A's row: the query itself works.
            r = await rec.send(Call("POST", url, {"filter": a_filter, "count": True}), h)
            if r.status_code != 200 or r.json()["total"] < 1:
                failures.append(f"{obj.name} {a_filter}: control found nothing: {r.text}")
            r = await rec.send(Call("POST", url, {"filter": b_filter, "count": True}), h)
            body = r.json()
            if r.status_code != 200 or body.get("data") != [] or body.get("total") != 0:
                failures.append(f"{obj.name} {b_filter}: {r.status_code} {r.text}")
            listed = await rec.send(
                Call("GET", f"/v3/crud/{obj.name}?count=true&filter=" + _json(b_filter)), h
            )
            if listed.status_code != 200 or listed.json().get("total") != 0:
                failures.append(f"GET {obj.name} filter {b_filter}: {listed.text}")
        relations = [r.name for r in (obj.parent, *obj.references, *obj.children) if r]
        if relations:
            r = await rec.send(Call("POST", url, {"include": relations, "count": True}), h)
            if r.status_code != 200 or r.json()["total"] < 1:
                failures.append(f"{obj.name} include {relations}: {r.status_code} {r.text}")
            listed = await rec.send(
                Call("GET", f"/v3/crud/{obj.name}?include=" + ",".join(relations)), h
            )
            if listed.status_code != 200:
                failures.append(f"GET {obj.name} include: {listed.text}")
    return failures


async def _copy_row(api: Api, obj: ObjectType, public_id: str, **changes: Any) -> str:
    """Insert a copy of a row with a new public id and `changes` (pks by column); its id."""
    table = api.runtime.tables[obj.table]
    async with api.runtime.engine.begin() as conn:
        row = (await conn.execute(sa.select(table).where(table.c.id_random == public_id))).one()
        values = {k: v for k, v in row._mapping.items() if k != "id"}
        values.update(changes, id_random=random_id())
        await conn.execute(table.insert().values(**values))
    return str(values["id_random"])


async def _pk(api: Api, obj: ObjectType, public_id: str) -> int:
    table = api.runtime.tables[obj.table]
    async with api.runtime.engine.connect() as conn:
        stmt = sa.select(table.c.id).where(table.c.id_random == public_id)
        return int((await conn.execute(stmt)).scalar_one())


async def planted_matrix(api: Api, mine: Seeded, theirs: Seeded) -> list[str]:
    """Defence in depth: rows that cross accounts (never made by the API, planted in SQL)
    must still stay invisible: relation filters, includes and nested lists carry the
    account predicate on every level, not only at the top."""
    reg = api.runtime.registry
    h = api.a.headers("owner")
    failures: list[str] = []
    for obj in reg:
        parent = obj.parent
        if parent is not None and parent.target != "account":
            # B's row hung under A's parent.
            a_parent = mine.ids[parent.target]
            stray = await _copy_row(
                api,
                obj,
                theirs.ids[obj.name],
                **{parent.field: await _pk(api, reg[parent.target], a_parent)},
            )
            url = f"/v3/crud/{parent.target}"
            body = {"filter": {"id": a_parent}, "include": [obj.name]}
            r = await api.client.post(f"{url}/search", json=body, headers=h)
            rows = r.json()["data"][0][obj.name]
            if any(row["id"] == stray for row in rows):
                failures.append(f"include {obj.name} from A's {parent.target} shows B's row")
            some = {"filter": {obj.name: {"_some": {"id": stray}}}, "count": True}
            r = await api.client.post(f"{url}/search", json=some, headers=h)
            if r.json().get("total") != 0:
                failures.append(f"{parent.target} _some {obj.name} matched B's row: {r.text}")
            r = await api.client.get(f"{url}/{a_parent}/{obj.name}?limit=500", headers=h)
            if any(row["id"] == stray for row in r.json()["data"]):
                failures.append(f"nested list of {obj.name} under A's parent shows B's row")
            r = await api.client.get(f"{url}/{a_parent}/{obj.name}/{stray}", headers=h)
            if r.status_code != 404:
                failures.append(f"nested read of B's {obj.name} under A's parent: {r.status_code}")
        for rel in obj.references:
            # A's row pointing at B's object.
            target = reg[rel.target]
            b_target = theirs.ids[rel.target]
            stray = await _copy_row(
                api, obj, mine.ids[obj.name], **{rel.field: await _pk(api, target, b_target)}
            )
            url = f"/v3/crud/{obj.name}/search"
            body = {"filter": {rel.name: {"id": b_target}}, "count": True}
            r = await api.client.post(url, json=body, headers=h)
            if r.json().get("total") != 0:
                failures.append(f"{obj.name} filtered through {rel.name} into B: {r.text}")
            body = {"filter": {"id": stray}, "include": [rel.name]}
            r = await api.client.post(url, json=body, headers=h)
            included = r.json()["data"][0][rel.name]
            if included is not None:
                failures.append(f"include {rel.name} from A's {obj.name} shows B's {included}")
    return failures


def _json(value: Any) -> str:
    import json
    from urllib.parse import quote

    return quote(json.dumps(value))
