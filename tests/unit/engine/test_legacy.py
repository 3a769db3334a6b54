"""Legacy routes, the pure parts: call parsing, headers, settings, OpenAPI, memory counts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from openapi_spec_validator import validate

import models  # noqa: F401  (registers the domain models on Base)
from engine.legacy import with_legacy_paths
from engine.legacy.calls import deprecation_headers, parse_legacy_call, successor_of
from engine.legacy.usage import MemoryUsageStore
from engine.openapi import build_openapi
from engine.settings import DEFAULT_LEGACY_SUNSET, SettingsError, load_settings
from models.base import Base
from registry import introspect

REGISTRY = introspect(Base)
ID = "Xq3vZ8kLm2Np4Rt6Yw9BcA"


@pytest.mark.parametrize(
    ("prefix", "method", "rest", "kind", "route", "successor", "url"),
    [
        ("/crud", "GET", "/event", "collection", "GET /crud/event", "GET /v3/crud/event", None),
        ("/crud", "GET", "/event/", "collection", "GET /crud/event", "GET /v3/crud/event", None),
        ("/crud", "POST", "/event", "collection", "POST /crud/event", "POST /v3/crud/event", None),
        (
            "/v2/crud",
            "PUT",
            f"/event/{ID}",
            "item",
            "PUT /v2/crud/event/{id}",
            "PATCH /v3/crud/event/{id}",
            None,
        ),
        (
            "/v2/crud",
            "POST",
            "/event_session/search",
            "search",
            "POST /v2/crud/event_session/search",
            "POST /v3/crud/event_session/search",
            None,
        ),
        (
            "/crud",
            "POST",
            "/event/search",
            None,
            "POST /crud/{path}",
            "POST /v3/crud/{path}",
            None,
        ),
        (
            "/crud",
            "GET",
            "/nope/abc",
            "item",
            "GET /crud/{type}/{id}",
            "GET /v3/crud/{type}/{id}",
            None,
        ),
        ("/crud", "GET", "", None, "GET /crud/{path}", "GET /v3/crud/{path}", "/v3/crud"),
        ("/crud", "GET", "/", None, "GET /crud/{path}", "GET /v3/crud/{path}", "/v3/crud"),
        ("/crud", "GET", "/schema", None, "GET /crud/{path}", "GET /v3/crud/{path}", None),
        ("/crud", "GET", "/event/schema", None, "GET /crud/{path}", "GET /v3/crud/{path}", None),
        ("/crud", "GET", "//event", None, "GET /crud/{path}", "GET /v3/crud/{path}", None),
        (
            "/v2/crud",
            "GET",
            f"/event/{ID}/event_session",
            None,
            "GET /v2/crud/{path}",
            "GET /v3/crud/{path}",
            None,
        ),
        (
            "/crud",
            "GET",
            "/ev%3Eent/a%20b%0D%0A",
            "item",
            "GET /crud/{type}/{id}",
            "GET /v3/crud/{type}/{id}",
            "/v3/crud/ev%3Eent/a%20b%0D%0A",
        ),
    ],
)
def test_parse_legacy_call(
    prefix: str,
    method: str,
    rest: str,
    kind: str | None,
    route: str,
    successor: str,
    url: str | None,
) -> None:
    call = parse_legacy_call(prefix, method, rest, REGISTRY)
    assert (call.kind, call.route, call.successor) == (kind, route, successor)
    assert call.successor_url == (url or "/v3/crud" + rest.rstrip("/"))
    assert call.segments is None if kind is None else call.segments
    assert successor_of(call.route) == call.successor


def test_the_three_headers() -> None:
    call = parse_legacy_call("/v2/crud", "GET", f"/event/{ID}", REGISTRY)
    headers = deprecation_headers(call, DEFAULT_LEGACY_SUNSET)
    assert headers == {
        "Deprecation": "@1767225600",  # RFC 9745: an RFC 9651 Date, 2026-01-01T00:00:00Z
        "Sunset": "Wed, 30 Jun 2027 23:59:59 GMT",
        "Link": f'</v3/crud/event/{ID}>; rel="successor-version"',
    }
    assert dt.datetime.fromtimestamp(1767225600, dt.UTC) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("false", False), ("0", False), ("TRUE", True)],
)
def test_legacy_routes_is_a_boolean_like_the_others(value: str, expected: bool) -> None:
    environ = {"AE_ENV": "test", "AE_API_JWT_KEY": "k", "AE_LEGACY_ROUTES": value}
    assert load_settings(environ, dotenv=None).legacy_routes is expected


def test_legacy_routes_off_by_default_and_refuses_other_words() -> None:
    environ = {"AE_ENV": "test", "AE_API_JWT_KEY": "k"}
    assert load_settings(environ, dotenv=None).legacy_routes is False
    with pytest.raises(SettingsError, match="AE_LEGACY_ROUTES"):
        load_settings({**environ, "AE_LEGACY_ROUTES": "sometimes"}, dotenv=None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEFAULT_LEGACY_SUNSET),
        ("Fri, 31 Dec 2027 23:59:59 GMT", "Fri, 31 Dec 2027 23:59:59 GMT"),
        ("2027-12-31", "Fri, 31 Dec 2027 00:00:00 GMT"),
        ("2027-12-31T23:00:00-02:00", "Sat, 01 Jan 2028 01:00:00 GMT"),
    ],
)
def test_legacy_sunset_is_sent_as_an_http_date(value: str | None, expected: str) -> None:
    environ = {"AE_ENV": "test", "AE_API_JWT_KEY": "k"}
    if value is not None:
        environ["AE_LEGACY_SUNSET"] = value
    assert load_settings(environ, dotenv=None).legacy_sunset == expected


@pytest.mark.parametrize(
    "value", ["soon", "2027-12-31T23:00:00", "31/12/2027", "9999-12-31T23:59:59-05:00"]
)
def test_a_bad_legacy_sunset_fails_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="AE_LEGACY_SUNSET"):
        load_settings(
            {"AE_ENV": "test", "AE_API_JWT_KEY": "k", "AE_LEGACY_SUNSET": value}, dotenv=None
        )


# -- OpenAPI --------------------------------------------------------------------------------

V3_DOC = build_openapi(REGISTRY, version="1.0.0")
DOC = with_legacy_paths(V3_DOC, REGISTRY)
METHODS = ("get", "put", "post", "patch", "delete")


def legacy_operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        if path.startswith(("/crud/", "/v2/crud/"))
        for method, op in item.items()
        if method in METHODS
    ]


def test_the_document_with_legacy_paths_is_valid_openapi() -> None:
    validate(DOC)
    ids = [
        op["operationId"]
        for item in DOC["paths"].values()
        for m, op in item.items()
        if m in METHODS
    ]
    assert len(ids) == len(set(ids))


def test_the_v3_document_is_left_as_it_was() -> None:
    assert not legacy_operations(V3_DOC) and "/v3/action/legacy-usage" not in V3_DOC["paths"]
    assert DOC["paths"]["/v3/crud/event"] == V3_DOC["paths"]["/v3/crud/event"]


def test_every_legacy_operation_is_deprecated_and_names_its_successor() -> None:
    ops = legacy_operations(DOC)
    for obj in REGISTRY:
        for prefix in ("/crud", "/v2/crud"):
            assert f"{prefix}/{obj.name}" in DOC["paths"]
            assert f"{prefix}/{obj.name}/{{id}}" in DOC["paths"]
        assert f"/v2/crud/{obj.name}/search" in DOC["paths"]
        assert f"/crud/{obj.name}/search" not in DOC["paths"]
    assert len(ops) > 4 * len(REGISTRY)
    for path, method, op in ops:
        assert op["deprecated"] is True, (path, method)
        v3_method, v3_path = op["x-aether-successor"].split(" ")
        v3_op = DOC["paths"][v3_path][v3_method.lower()]
        assert v3_path == "/v3/crud" + path.removeprefix("/v2").removeprefix("/crud")
        assert v3_method == ("PATCH" if method == "put" else method.upper())
        assert set(op["responses"]) == set(v3_op["responses"])
        for status, response in op["responses"].items():
            if "$ref" in response:
                response = DOC["components"]["responses"][response["$ref"].split("/")[-1]]
            assert {"Deprecation", "Sunset", "Link"} <= set(response["headers"]), (path, status)


def test_legacy_answer_shapes() -> None:
    item = DOC["paths"]["/crud/event/{id}"]["get"]["responses"]["200"]
    schema = item["content"]["application/json"]["schema"]
    assert schema["properties"]["data"] == {"$ref": "#/components/schemas/event"}
    page = DOC["paths"]["/v2/crud/event/search"]["post"]["responses"]["200"]
    schema = page["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"data", "has_more", "total"}
    assert DOC["paths"]["/crud/file"].keys() == {"get"}  # no create for files, as in V3
    usage = DOC["paths"]["/v3/action/legacy-usage"]["get"]
    assert usage["x-aether-min-role"] == "admin"


# -- memory counts --------------------------------------------------------------------------


async def test_memory_counts_per_account_principal_and_route() -> None:
    now = [1_800_000_000.0]
    store = MemoryUsageStore(clock=lambda: now[0])
    for _ in range(2):
        await store.record("a", "user:u", "GET /crud/event")
    now[0] += 60
    await store.record("a", "api_key:k", "PUT /crud/event/{id}")
    await store.record("a", "api_key:k", "PUT /crud/event/{id}")
    await store.record("a", "api_key:k", "PUT /crud/event/{id}")
    await store.record("b", "user:v", "GET /crud/event")
    rows = await store.read("a")
    assert [(u.principal, u.route, u.successor, u.calls) for u in rows] == [
        ("api_key:k", "PUT /crud/event/{id}", "PATCH /v3/crud/event/{id}", 3),
        ("user:u", "GET /crud/event", "GET /v3/crud/event", 2),
    ]
    assert rows[1].last_called_at == dt.datetime.fromtimestamp(1_800_000_000, dt.UTC)
    assert await store.read("nobody") == []
