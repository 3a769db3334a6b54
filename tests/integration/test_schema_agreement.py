"""The served JSON Schemas, the OpenAPI document and the API agree (SPEC 5, 7).

Every schema is a valid draft 2020-12 document, every object the API returns validates
against its type's read shape, and for generated bodies (valid ones and mutations) the
API's accept/reject decision equals the schema validator's for `$defs.create` and
`$defs.update`, and for generated search bodies the search's decision equals the
validator's for the OpenAPI `{type}.search` schema. Rules JSON Schema cannot state
(ends_at ≥ starts_at, uniqueness, references that exist, a cursor's integrity) are kept
out of generation; NUL, IANA time zone names and e-mail syntax are in the schemas and in
the mutations.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_openapi

import models  # noqa: F401  (registers the domain models on Base)
from models.base import Base
from registry import introspect
from registry.jsonschema import NO_NUL_PATTERN, collection_paths
from registry.searchschema import include_paths
from tests.integration.conftest import Api

EVENT = {"name": "Gala", "starts_at": "2027-03-14T09:00:00+01:00", "ends_at": None}
#: Every type a client can create with a generated body (users and files need more: unique
#: emails, uploads), children of `event` get the test's event as their parent.
CREATABLE = ["event", "event_session", "event_person", "event_badge_template"]
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FORMATS = FormatChecker()

# -- bodies generated from a schema, and mutations of them -----------------------------------

#: No lone surrogates: JSON text escaping one is refused as malformed (400), not by a schema.
TEXT = st.characters(exclude_categories=("Cs",))
#: Inside a JSON column NUL is refused too, a rule its schema does not state (README).
JSON_TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
SCALARS = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(JSON_TEXT, max_size=10)
UNKNOWN_KEYS = ["nmae", "id", "account_id", "created_at", "updated_at", "version", "zzz"]


def _rfc3339(moment: dt.datetime, minutes: int) -> str:
    aware = moment.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes)))
    text = aware.isoformat()
    return text.replace("+00:00", "Z") if minutes == 0 and moment.second % 2 else text


DATETIMES = st.builds(
    _rfc3339,
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    st.integers(-14 * 60, 14 * 60),
)


def _types(prop: dict[str, Any]) -> list[str]:
    kind = prop.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def value_strategy(prop: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values `prop` accepts, leaving out what the API checks beyond the schema."""
    kinds = _types(prop)
    options: list[st.SearchStrategy[Any]] = [st.none()] if "null" in kinds else []
    limit = prop.get("maxLength", 300)
    if "enum" in prop:
        options.append(st.sampled_from([v for v in prop["enum"] if v is not None]))
    elif prop.get("format") == "date-time":
        options.append(DATETIMES)
    elif "pattern" in prop and prop["pattern"] != NO_NUL_PATTERN:
        regex = st.from_regex(prop["pattern"], fullmatch=True)
        options.append(regex.filter(lambda v: len(v) <= limit and "\n" not in v))
    elif "string" in kinds:
        options.append(st.text(TEXT, max_size=limit))
    elif "integer" in kinds:
        options.append(st.integers(prop.get("minimum"), prop.get("maximum")))
    elif "object" in kinds:
        options.append(st.dictionaries(st.text(JSON_TEXT, max_size=6), SCALARS, max_size=3))
    return st.one_of(options)


def _wrong(prop: dict[str, Any]) -> list[Any]:
    """Values the schema refuses for `prop`: wrong types, out of range, too long, naive."""
    kinds = _types(prop)
    out: list[Any] = [[], [1], True] if "object" not in kinds else [[], "x", 3]
    if "string" in kinds:
        out += [5, 1.5, {"a": 1}, "x" * (prop.get("maxLength", 10_000) + 1)]
    if "integer" in kinds:
        out += ["5", 1.5, prop.get("minimum", 0) - 1, 2**64, -(2**64)]
        if "maximum" in prop:
            out.append(prop["maximum"] + 1)
    if "null" not in kinds:
        out.append(None)
    if prop.get("format") == "date-time":
        out += ["2027-03-14T09:00:00", "2027-03-14", "2027-13-01T00:00:00Z", 1_700_000_000]
    if "enum" in prop:
        out += [str(prop["enum"][0]).upper(), ""]
    if "pattern" in prop:
        out += ["has space", "é" * 3]
    if "string" in kinds:
        out += ["a\x00b", "\x00"]
    if prop.get("x-format") == "iana-timezone":
        out += ["Europe/paris", "UTC\x00", "../etc/zoneinfo"]
    return out


@st.composite
def body_strategy(
    draw: st.DrawFn, doc: dict[str, Any], shape: str, fixed: dict[str, Any]
) -> dict[str, Any]:
    """A body for `$defs[shape]`: a valid one, then with probability ~1/2 a mutation."""
    write = doc["$defs"][shape]
    props: dict[str, Any] = write["properties"]
    required = set(write.get("required", []))
    body: dict[str, Any] = {}
    for key, prop in props.items():
        if key in fixed:
            body[key] = fixed[key]
        elif key in required or draw(st.booleans()):
            body[key] = draw(value_strategy(prop))
    mutation = draw(st.sampled_from(["none", "none", "none", "wrong", "unknown", "drop"]))
    if mutation == "wrong":
        key = draw(st.sampled_from(sorted(props)))
        body[key] = draw(st.sampled_from(_wrong(props[key])))
    elif mutation == "unknown":
        body[draw(st.sampled_from(UNKNOWN_KEYS))] = draw(SCALARS)
    elif mutation == "drop" and required:
        body.pop(draw(st.sampled_from(sorted(required))), None)
    return body


def _moment(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def violates_cross_field(body: dict[str, Any], current: dict[str, Any]) -> bool:
    """ends_at before starts_at, after the body is laid over the stored state."""
    merged = {**current, **body}
    starts, ends = _moment(merged.get("starts_at")), _moment(merged.get("ends_at"))
    # Mutations may break one side; only two readable datetimes can be compared.
    return starts is not None and ends is not None and ends < starts


def _norm(prop: dict[str, Any], value: Any) -> Any:
    if prop.get("format") == "date-time" and isinstance(value, str):
        return dt.datetime.fromisoformat(value).astimezone(dt.UTC)
    return value


def normalise(doc: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """The writable fields of `obj` with datetimes as aware UTC values."""
    props = doc["$defs"]["create"]["properties"]
    return {k: _norm(props[k], v) for k, v in obj.items() if k in props}


def expected_after_write(
    doc: dict[str, Any], body: dict[str, Any], before: dict[str, Any], *, update: bool = False
) -> dict[str, Any]:
    """What a read must show: the stored state (or defaults) with the body laid over it."""
    props = doc["$defs"]["create"]["properties"]
    start = normalise(doc, before) if update else {k: p.get("default") for k, p in props.items()}
    if not update and "event_id" in props:
        start["event_id"] = before["event_id"]
    return start | {k: _norm(props[k], v) for k, v in body.items()}


class Schemas:
    """Schemas fetched over HTTP, with validators for the read and write shapes."""

    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs

    def validator(self, name: str, shape: str = "read") -> Draft202012Validator:
        doc = self.docs[name]
        if shape == "read":
            return Draft202012Validator(doc, format_checker=FORMATS)
        # Evaluated against the whole document so `#/$defs/...` refs resolve.
        sub = {**doc, "$ref": f"#/$defs/{shape}"}
        for key in ("type", "properties", "required", "additionalProperties"):
            sub.pop(key, None)
        return Draft202012Validator(sub, format_checker=FORMATS)

    def check(self, name: str, obj: dict[str, Any]) -> None:
        errors = sorted(str(e.message) for e in self.validator(name).iter_errors(obj))
        assert not errors, (name, obj, errors)


async def fetch_schemas(api: Api) -> Schemas:
    h = api.a.headers()
    index = await api.client.get("/v3/crud/schema", headers=h)
    assert index.status_code == 200, index.text
    docs = {}
    for entry in index.json()["data"]:
        r = await api.client.get(f"/v3/crud/{entry['name']}/schema", headers=h)
        assert r.status_code == 200, r.text
        docs[entry["name"]] = r.json()
    return Schemas(docs)


_FETCHED: dict[int, Schemas] = {}


async def cached_schemas(api: Api) -> Schemas:
    """The schemas of this test's app, fetched once per app (hypothesis reuses the app)."""
    if id(api) not in _FETCHED:
        _FETCHED.clear()  # one app at a time: an old id may be reused by a new app
        _FETCHED[id(api)] = await fetch_schemas(api)
    return _FETCHED[id(api)]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_every_schema_is_valid_and_cacheable(api: Api) -> None:
    h = api.a.headers()
    index = await api.client.get("/v3/crud/schema", headers=h)
    names = [e["name"] for e in index.json()["data"]]
    assert set(names) == {o.name for o in api.runtime.registry}
    for url in ["/v3/crud/schema", *(f"/v3/crud/{n}/schema" for n in names)]:
        r = await api.client.get(url, headers=h)
        assert r.status_code == 200, (url, r.text)
        etag, cache = r.headers.get("etag"), r.headers.get("cache-control")
        assert etag and cache, (url, dict(r.headers))
        again = await api.client.get(url, headers={**h, "If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag, url
        assert again.content == b""
        stale = await api.client.get(url, headers={**h, "If-None-Match": '"nope"'})
        assert stale.status_code == 200
        if url == "/v3/crud/schema":
            continue
        doc = r.json()
        Draft202012Validator.check_schema(doc)
        for shape in ("create", "update"):
            write = doc["$defs"][shape]
            Draft202012Validator.check_schema(write)
            assert not any(p.get("readOnly") for p in write["properties"].values()), url
            assert all(ref.startswith("#/$defs/") for ref in _refs(write)), url
            assert "anyOf" not in str(write["properties"]) or _refs(write), url
        assert doc["additionalProperties"] is False
        for prop in doc["properties"].values():
            pattern = prop.get("pattern", "")
            assert "(?P" not in pattern and "\\A" not in pattern and "\\Z" not in pattern


async def test_every_returned_object_matches_its_read_schema(api: Api) -> None:
    schemas = await fetch_schemas(api)
    h = api.a.headers()
    r = await api.client.post("/v3/crud/event", json={**EVENT, "code": "A-1"}, headers=h)
    assert r.status_code == 201, r.text
    event = r.json()
    children = {
        "event_session": {"title": "Talk", "starts_at": "2027-03-14T10:00:00.5-05:00"},
        "event_person": {"first_name": "Ada", "last_name": "L", "tags": ["vip"]},
        "event_badge_template": {
            "name": "Std",
            "width_mm": 90,
            "height_mm": 55.5,
            "layout": {"elements": [{"field": "name", "x": 1, "y": 2.5, "font_size": 12}]},
        },
    }
    returned: list[tuple[str, dict[str, Any]]] = [("event", event)]
    for name, body in children.items():
        r = await api.client.post(f"/v3/crud/event/{event['id']}/{name}", json=body, headers=h)
        assert r.status_code == 201, r.text
        returned.append((name, r.json()))
    for name, obj in list(returned):
        got = await api.client.get(f"/v3/crud/{name}/{obj['id']}", headers=h)
        assert got.status_code == 200 and got.json() == obj
    for name in schemas.docs:
        listed = await api.client.get(f"/v3/crud/{name}", headers=h)
        assert listed.status_code == 200, (name, listed.text)
        returned += [(name, item) for item in listed.json()["data"]]
        found = await api.client.post(f"/v3/crud/{name}/search", json={}, headers=h)
        assert found.status_code == 200, (name, found.text)
        returned += [(name, item) for item in found.json()["data"]]
    assert {n for n, _ in returned} >= {"account", "user", "api_key", "event", *children}
    for name, obj in returned:
        schemas.check(name, obj)


def _datetime_z(value: Any) -> bool:
    return isinstance(value, str) and value.endswith("Z")


async def _decide_create(api: Api, schemas: Schemas, name: str, body: dict[str, Any]) -> None:
    accepted = schemas.validator(name, "create").is_valid(body)
    r = await api.client.post(f"/v3/crud/{name}", json=body, headers=api.a.headers())
    assert r.status_code == (201 if accepted else 422), (name, body, accepted, r.text)
    if r.status_code != 201:
        return
    created = r.json()
    schemas.check(name, created)
    doc = schemas.docs[name]
    assert normalise(doc, created) == expected_after_write(doc, body, created), body
    for key, prop in doc["properties"].items():
        if prop.get("format") == "date-time" and created.get(key) is not None:
            assert _datetime_z(created[key]), (key, created[key])
    got = await api.client.get(f"/v3/crud/{name}/{created['id']}", headers=api.a.headers())
    assert got.json() == created
    deleted = await api.client.delete(f"/v3/crud/{name}/{created['id']}", headers=api.a.headers())
    assert deleted.status_code == 204


@pytest.fixture
async def parent_event(api: Api) -> dict[str, Any]:
    r = await api.client.post("/v3/crud/event", json=EVENT, headers=api.a.headers())
    assert r.status_code == 201, r.text
    event: dict[str, Any] = r.json()
    return event


@HYPOTHESIS
@given(data=st.data())
async def test_create_decision_equals_schema_decision(
    api: Api, parent_event: dict[str, Any], data: st.DataObject
) -> None:
    schemas = await cached_schemas(api)
    name = data.draw(st.sampled_from(CREATABLE), label="type")
    doc = schemas.docs[name]
    fixed = {"event_id": parent_event["id"]} if name != "event" else {}
    body = data.draw(body_strategy(doc, "create", fixed), label="body")
    assume(not violates_cross_field(body, {}))
    await _decide_create(api, schemas, name, body)


@HYPOTHESIS
@given(data=st.data())
async def test_update_decision_equals_schema_decision(
    api: Api, parent_event: dict[str, Any], data: st.DataObject
) -> None:
    schemas = await cached_schemas(api)
    name = data.draw(st.sampled_from(["event", "event_session"]), label="type")
    doc = schemas.docs[name]
    # A reference to an object that does not exist is a 422 no schema can foresee: a
    # session's event_id, when sent, names its own event.
    fixed = {"event_id": parent_event["id"]} if name == "event_session" else {}
    body = data.draw(body_strategy(doc, "update", fixed), label="body")
    h = api.a.headers()
    base = {"title": "T", "starts_at": "2027-03-14T10:00:00Z", "event_id": parent_event["id"]}
    start = EVENT if name == "event" else base
    assume(not violates_cross_field(body, normalise(doc, start)))
    r = await api.client.post(f"/v3/crud/{name}", json=start, headers=h)
    assert r.status_code == 201, r.text
    current = r.json()
    accepted = schemas.validator(name, "update").is_valid(body)
    patched = await api.client.patch(f"/v3/crud/{name}/{current['id']}", json=body, headers=h)
    assert patched.status_code == (200 if accepted else 422), (name, body, accepted, patched.text)
    after = await api.client.get(f"/v3/crud/{name}/{current['id']}", headers=h)
    if patched.status_code == 200:
        result = patched.json()
        schemas.check(name, result)
        assert after.json() == result
        assert normalise(doc, result) == expected_after_write(doc, body, current, update=True)
    else:
        assert after.json() == current
    await api.client.delete(f"/v3/crud/{name}/{current['id']}", headers=h)


# -- search bodies --------------------------------------------------------------------------

REGISTRY = introspect(Base)
SEARCH_TEXT = st.text(TEXT, max_size=4) | st.sampled_from(["a\x00b", "Gala"])


def _search_body() -> st.SearchStrategy[dict[str, Any]]:
    """Search bodies on `event`, inside or just outside what its schema allows."""
    event = REGISTRY["event"]
    sortable = [f.name for f in event.fields if f.sortable][:2]
    sort_keys = [*sortable, *(f"-{k}" for k in sortable), "nope"]
    includes = [*include_paths(event, REGISTRY), "nope", "event_session.nope"]
    filters = {
        "name": SEARCH_TEXT | st.fixed_dictionaries({"_icontains": SEARCH_TEXT}),
        "capacity": st.fixed_dictionaries(
            {"_gte": st.integers(-(2**65), 2**65) | st.sampled_from([1.5, 10.0])}
        ),
        "status": st.fixed_dictionaries(
            {"_in": st.lists(st.sampled_from(["open", "draft", "Open"]), max_size=2)}
        ),
        "ends_at": st.none(),
        "event_session": st.just({"_some": {"room": "A1"}}),
    }
    too_deep = "event_session.event.event_session.event"
    optional = {
        "filter": st.none() | st.fixed_dictionaries({}, optional=filters),
        "sort": st.none() | st.lists(st.sampled_from(sort_keys), max_size=3),
        "include": st.none() | st.lists(st.sampled_from([*includes, too_deep]), max_size=2),
        "fields": st.none() | st.lists(st.sampled_from(["id", "name", "nope"]), max_size=2),
        "limit": st.sampled_from([None, 0, 1, 10.0, 1.5, 500, 501, 2**70, True, "5"]),
        "offset": st.sampled_from([None, 0, 5, 2**31 - 1, 2**31, -1]),
        "count": st.sampled_from([None, True, "yes"]),
    }
    return st.fixed_dictionaries({}, optional=optional)


_OPENAPI: dict[int, Draft202012Validator] = {}


@HYPOTHESIS
@given(body=_search_body())
async def test_search_decision_equals_schema_decision(api: Api, body: dict[str, Any]) -> None:
    if id(api) not in _OPENAPI:
        _OPENAPI.clear()
        spec = (await api.client.get("/openapi.json")).json()
        search = {**spec, "$ref": "#/components/schemas/event.search"}
        _OPENAPI[id(api)] = Draft202012Validator(search)
    accepted = _OPENAPI[id(api)].is_valid(body)
    r = await api.client.post("/v3/crud/event/search", json=body, headers=api.a.headers())
    assert r.status_code in (200, 422), (body, r.status_code, r.text)
    assert (r.status_code == 200) == accepted, (body, accepted, r.text)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_integral_float_for_an_integer_field(api: Api) -> None:
    schemas = await fetch_schemas(api)
    await _decide_create(api, schemas, "event", {**EVENT, "capacity": 10.0})


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_datetime_spellings_outside_rfc3339(api: Api) -> None:
    schemas = await fetch_schemas(api)
    for value in ("2027-03-14 09:00:00Z", "2027-03-14T09:00:00+0100"):
        await _decide_create(api, schemas, "event", {**EVENT, "starts_at": value})


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_pattern_dollar_does_not_accept_a_trailing_newline(api: Api) -> None:
    r = await api.client.post(
        "/v3/crud/event", json={**EVENT, "code": "GALA\n"}, headers=api.a.headers()
    )
    assert r.status_code == 422, r.text


async def test_datetimes_at_the_edge_of_the_calendar_are_not_500(api: Api) -> None:
    # Year 1 at +01:00 and year 9999 at -01:00 fall outside datetime's range in UTC;
    # MariaDB documents DATETIME from year 1000 but stores earlier years too.
    for value, status in (
        ("0001-01-01T00:00:00+01:00", 422),
        ("9999-12-31T23:59:59-01:00", 422),
        ("0001-01-01T00:00:00Z", 201),
        ("0999-12-31T23:59:59.999999Z", 201),
        ("9999-12-31T23:59:59.999999Z", 201),
    ):
        r = await api.client.post(
            "/v3/crud/event", json={**EVENT, "starts_at": value}, headers=api.a.headers()
        )
        assert r.status_code == status, (value, r.text)
        if r.status_code == 422:
            assert any(e["path"] == "starts_at" for e in r.json()["errors"])
        else:
            got = await api.client.get(f"/v3/crud/event/{r.json()['id']}", headers=api.a.headers())
            assert got.json()["starts_at"] == r.json()["starts_at"] == value, got.text


async def test_openapi_is_valid_and_lists_every_route(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200 and r.headers.get("etag"), r.text
    assert (
        await api.client.get("/openapi.json", headers={"If-None-Match": r.headers["etag"]})
    ).status_code == 304
    spec = r.json()
    validate_openapi(spec)
    paths = spec["paths"]
    reg = api.runtime.registry
    h = api.a.headers()
    for obj in reg:
        schema = (await api.client.get(f"/v3/crud/{obj.name}/schema", headers=h)).json()
        hints = schema["x-aether"]
        assert f"/v3/crud/{obj.name}/schema" in paths
        for collection in collection_paths(reg, obj.name):
            coll_ops = set(paths[collection]) - {"parameters"}
            assert coll_ops == {"get", *(["post"] if hints["create"] else [])}, collection
            assert "post" in paths[f"{collection}/search"], collection
            item_ops = set(paths[f"{collection}/{{id}}"]) - {"parameters"}
            expected = {"get", *(["patch"] * hints["update"]), *(["delete"] * hints["delete"])}
            assert item_ops == expected, (collection, item_ops)
        flat = f"/v3/crud/{obj.name}"
        assert (await api.client.get(flat, headers=h)).status_code == 200
        assert (await api.client.post(f"{flat}/search", json={}, headers=h)).status_code == 200
        if not hints["create"]:
            refused = await api.client.post(flat, json={}, headers=h)
            assert refused.status_code == 405 and "POST" not in refused.headers["allow"]
    for fixed in ("/healthz", "/readyz", "/openapi.json", "/docs", "/v3/crud/schema"):
        assert fixed in paths
