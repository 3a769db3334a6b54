"""Hostile and malformed input over HTTP on every backend: never a 500 (SPEC 2, 5, 6, 8).

Deep nesting, numbers out of every range, broken UTF-8, lone surrogates, NUL, oversized
bodies, odd ids and query parameters, search bodies past each limit and forged cursors.
Each case asserts the exact client error the contract names, and hypothesis throws random
JSON at create and search to check the status stays in the client-error family.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import Api

EVENT = {"name": "Gala", "starts_at": "2027-03-14T09:00:00Z"}
ALLOWED = {200, 201, 400, 413, 422}
DEEP = 10_000
#: Cases refused by the HTTP layer before any SQL runs: one backend is enough for them.
HTTP_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


def problem_paths(response: Any) -> set[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return {e["path"] for e in response.json().get("errors", [])}


async def post_raw(api: Api, path: str, body: bytes, role: str = "owner") -> Any:
    headers = {**api.a.headers(role), "Content-Type": "application/json"}
    return await api.client.post(f"/v3/crud/{path}", content=body, headers=headers)


async def create_event(api: Api, **extra: Any) -> dict[str, Any]:
    r = await api.client.post("/v3/crud/event", json={**EVENT, **extra}, headers=api.a.headers())
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


# -- JSON itself ----------------------------------------------------------------------------


@HTTP_ONLY
@pytest.mark.parametrize("path", ["event", "event/search"])
async def test_nesting_ten_thousand_deep_body_is_a_client_error(api: Api, path: str) -> None:
    for body in ("[" * DEEP + "]" * DEEP, '{"a":' * DEEP + "1" + "}" * DEEP):
        r = await post_raw(api, path, body.encode())
        assert r.status_code in (400, 422), r.text
    inner = '{"a":' * DEEP + "1" + "}" * DEEP
    r = await post_raw(api, "event", f'{{"name": "x", "metadata": {inner}}}'.encode())
    assert r.status_code in (400, 422), r.text


@HTTP_ONLY
async def test_nesting_ten_thousand_deep_filter_param_is_a_client_error(api: Api) -> None:
    # httpx caps a URL component at 64 KiB, so objects nest less deep than arrays here.
    for raw in ("[" * DEEP + "]" * DEEP, '{"_not":' * 2000 + "{}" + "}" * 2000):
        r = await api.client.get("/v3/crud/event", params={"filter": raw}, headers=api.a.headers())
        assert r.status_code in (400, 422), r.text


async def test_json_columns_nest_31_levels_at_most_on_every_backend(api: Api) -> None:
    # MariaDB's JSON_VALID refuses 32 levels: the engine refuses them first, everywhere.
    for depth in (20, 31, 32, 200):
        nested: Any = 1
        for _ in range(depth):
            nested = {"a": nested}
        r = await api.client.post(
            "/v3/crud/event", json={**EVENT, "metadata": nested}, headers=api.a.headers()
        )
        if depth <= 31:
            assert r.status_code == 201, (depth, r.text)
            assert r.json()["metadata"] == nested
        else:
            assert r.status_code == 422, (depth, r.text)
            assert r.json()["errors"][0]["path"] == "metadata"


@HTTP_ONLY
@pytest.mark.parametrize(
    "literal",
    ["18446744073709551616", "-9223372036854775809", "1" + "0" * 400, "1e999", "-1e999"],
)
async def test_numbers_out_of_range_are_422(api: Api, literal: str) -> None:
    body = f'{{"name": "x", "starts_at": "2027-03-14T09:00:00Z", "capacity": {literal}}}'
    r = await post_raw(api, "event", body.encode())
    assert r.status_code in (400, 422), r.text
    if r.status_code == 422:
        assert "capacity" in problem_paths(r)


async def test_numbers_out_of_range_inside_a_json_column(api: Api) -> None:
    for literal, status in (
        ("18446744073709551616", 201),  # JSON has no integer range: kept exactly
        ("1e999", 422),
        ("-1e999", 422),
        ("1e308", 201),
        ("-0.0", 201),
        ("1e-400", 201),
    ):
        meta = f'{{"n": {literal}, "l": [{literal}]}}'
        body = f'{{"name": "x", "starts_at": "2027-03-14T09:00:00Z", "metadata": {meta}}}'
        r = await post_raw(api, "event", body.encode())
        assert r.status_code == status, (literal, r.text)
        if r.status_code == 201:
            got = await api.client.get(f"/v3/crud/event/{r.json()['id']}", headers=api.a.headers())
            assert got.status_code == 200 and got.json() == r.json(), literal


@HTTP_ONLY
async def test_invalid_utf8_is_a_client_error(api: Api) -> None:
    for body in (
        b'{"name": "\xff\xfe", "starts_at": "2027-03-14T09:00:00Z"}',
        b'{"name": "caf\xc3", "starts_at": "2027-03-14T09:00:00Z"}',
        b'{"name": "x", "starts_at": "2027-03-14T09:00:00Z", "metadata": {"k": "\xc0\xaf"}}',
        b'{"\xed\xa0\x80": 1}',
        b'{"filter": {"name": "\xff"}}',
    ):
        for path in ("event", "event/search"):
            r = await post_raw(api, path, body)
            assert r.status_code in (400, 422), (path, body, r.text)


async def test_lone_surrogate_escapes_are_refused(api: Api) -> None:
    for raw in (
        rb'{"name": "a\ud800b", "starts_at": "2027-03-14T09:00:00Z"}',
        rb'{"name": "x", "starts_at": "2027-03-14T09:00:00Z", "metadata": {"\udfff": "\ud800"}}',
        rb'{"name": "x", "starts_at": "2027-03-14T09:00:00Z", "venue": "\udc00\ud800"}',
    ):
        r = await post_raw(api, "event", raw)
        assert r.status_code in (400, 422), r.text
    # A valid escaped pair is one character, stored and returned as such.
    ok = rb'{"name": "\ud83c\udf89", "starts_at": "2027-03-14T09:00:00Z"}'
    r = await post_raw(api, "event", ok)
    assert r.status_code == 201 and r.json()["name"] == "\U0001f389", r.text
    r = await post_raw(api, "event/search", rb'{"filter": {"name": "\ud800"}}')
    assert r.status_code == 400, r.text
    r = await api.client.get(
        "/v3/crud/event", params={"filter": '{"name": "\\ud800"}'}, headers=api.a.headers()
    )
    assert r.status_code == 400, r.text


async def test_nul_in_strings_json_and_filters(api: Api) -> None:
    for field in ("name", "venue", "code"):
        r = await api.client.post(
            "/v3/crud/event", json={**EVENT, field: "a\x00b"}, headers=api.a.headers()
        )
        assert r.status_code == 422 and field in problem_paths(r), r.text
    r = await api.client.post(
        "/v3/crud/event", json={**EVENT, "metadata": {"k\x00": "v\x00"}}, headers=api.a.headers()
    )
    assert r.status_code == 422 and "metadata" in problem_paths(r), r.text
    r = await api.client.post(
        "/v3/crud/event/search", json={"filter": {"name": "a\x00"}}, headers=api.a.headers()
    )
    assert r.status_code == 422, r.text
    r = await api.client.get(
        "/v3/crud/event",
        params={"filter": '{"venue": {"_contains": "\\u0000"}}'},
        headers=api.a.headers(),
    )
    assert r.status_code == 422, r.text


async def test_four_byte_text_round_trips_unchanged(api: Api) -> None:
    # 200 four-byte characters fill `name` exactly: characters are counted, not bytes.
    name = "🎉𝄞" * 100
    venue = "Zürich 東京 ☃ 🏳️‍🌈 \U0010fffd"
    event = await create_event(api, name=name, venue=venue, metadata={"emoji": "🐍", "🔑": [1]})
    assert event["name"] == name and event["venue"] == venue
    got = await api.client.get(f"/v3/crud/event/{event['id']}", headers=api.a.headers())
    assert got.json() == event
    found = await api.client.post(
        "/v3/crud/event/search", json={"filter": {"venue": venue}}, headers=api.a.headers()
    )
    assert [e["id"] for e in found.json()["data"]] == [event["id"]]


async def test_string_longer_than_its_column_is_422_and_nothing_stored(api: Api) -> None:
    event = await create_event(api)
    for field, value in (("name", "é" * 201), ("code", "A" * 33), ("venue", "🎉" * 201)):
        r = await api.client.post(
            "/v3/crud/event", json={**EVENT, field: value}, headers=api.a.headers()
        )
        assert r.status_code == 422 and field in problem_paths(r), r.text
        r = await api.client.patch(
            f"/v3/crud/event/{event['id']}", json={field: value}, headers=api.a.headers()
        )
        assert r.status_code == 422 and field in problem_paths(r), r.text
    listed = await api.client.get("/v3/crud/event", headers=api.a.headers())
    assert listed.json()["data"] == [event]


@HTTP_ONLY
async def test_duplicate_keys_the_last_one_wins(api: Api) -> None:
    r = await post_raw(
        api, "event", b'{"name": "a", "name": "b", "starts_at": "2027-03-14T09:00:00Z"}'
    )
    # RFC 8259 leaves duplicate names to the parser: msgspec keeps the last, everywhere.
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "b"


@HTTP_ONLY
async def test_body_over_one_mebibyte_is_413(api: Api) -> None:
    big = msgspec.json.encode({**EVENT, "metadata": {"x": "y" * (1024 * 1024)}})
    for path in ("event", "event/search"):
        r = await post_raw(api, path, big)
        assert r.status_code == 413, r.text

    async def chunks() -> Any:  # no Content-Length: the stream itself must be cut off
        for _ in range(20):
            yield b" " * 65536
        yield b"{}"

    headers = {**api.a.headers(), "Content-Type": "application/json"}
    r = await api.client.post("/v3/crud/event", content=chunks(), headers=headers)
    assert r.status_code == 413, r.text


# -- query parameters -------------------------------------------------------------------------


BAD_QUERIES = [
    ("limit=abc", "limit"),
    ("limit=100000", "limit"),
    ("limit=0", "limit"),
    ("limit=99999999999999999999999", "limit"),
    ("offset=-1", "offset"),
    ("offset=x", "offset"),
    ("count=maybe", "count"),
    ("sort=nope", "sort"),
    ("fields=secret", "fields"),
    ("frobnicate=1", "frobnicate"),
]


@HTTP_ONLY
async def test_bad_query_parameters_are_422_naming_them(api: Api) -> None:
    for query, path in BAD_QUERIES:
        for url in ("/v3/crud/event", f"/v3/crud/account/{api.a.account_id}/event"):
            r = await api.client.get(f"{url}?{query}", headers=api.a.headers())
            assert r.status_code == 422, (query, r.text)
            paths = problem_paths(r)
            assert any(p == path or p.startswith(path + "[") for p in paths), (query, r.text)


ODD_IDS = ["1", "0", "-1", "%2E%2E", "a" * 200, "A" * 21, "A" * 23, "%00" * 22, "%20" * 22]


async def assert_404_everywhere(api: Api, ident: str) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        for url in (f"/v3/crud/event/{ident}", f"/v3/crud/event/{ident}/event_session"):
            r = await api.client.request(method, url, headers=api.a.headers(), json={})
            assert r.status_code == 404, (method, url, r.status_code, r.text)


@HTTP_ONLY
async def test_odd_ids_are_404(api: Api) -> None:
    for ident in ODD_IDS:
        await assert_404_everywhere(api, ident)


@HTTP_ONLY
async def test_encoded_slash_id_is_404(api: Api) -> None:
    await assert_404_everywhere(api, "%2F")


@HTTP_ONLY
async def test_dot_segments_never_reach_another_object(api: Api) -> None:
    # Clients (httpx, browsers) resolve `..` before sending: what arrives is /v3/crud/.
    event = await create_event(api)
    # `event/..` arrives as /v3/crud, which Starlette redirects to /v3/crud/ (a 404);
    # `event/{id}/..` arrives as /v3/crud/event, where DELETE is not offered.
    r = await api.client.delete("/v3/crud/event/..", headers=api.a.headers())
    assert r.status_code == 307 and r.headers["location"].endswith("/v3/crud/"), r.text
    assert (await api.client.delete("/v3/crud/", headers=api.a.headers())).status_code == 404
    r = await api.client.delete(f"/v3/crud/event/{event['id']}/..", headers=api.a.headers())
    assert r.status_code == 405, r.text
    got = await api.client.get(f"/v3/crud/event/{event['id']}", headers=api.a.headers())
    assert got.status_code == 200


async def test_valid_id_of_another_type_is_404(api: Api) -> None:
    event = await create_event(api)
    r = await api.client.post(
        f"/v3/crud/event/{event['id']}/event_session",
        json={"title": "Talk", "starts_at": "2027-03-14T10:00:00Z"},
        headers=api.a.headers(),
    )
    session = r.json()
    for path in (
        f"event_session/{event['id']}",
        f"event/{session['id']}",
        f"event/{session['id']}/event_session/{session['id']}",
        f"event_person/{quote(event['id'])}",
    ):
        got = await api.client.get(f"/v3/crud/{path}", headers=api.a.headers())
        assert got.status_code == 404, (path, got.text)


# -- search limits ----------------------------------------------------------------------------


def nested_not(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"name": "x"}
    for _ in range(depth - 1):
        node = {"_not": node}
    return node


async def search(api: Api, body: Any) -> Any:
    return await api.client.post("/v3/crud/event/search", json=body, headers=api.a.headers())


async def test_search_limits(api: Api) -> None:
    assert (await search(api, {"filter": nested_not(8)})).status_code == 200
    r = await search(api, {"filter": nested_not(9)})
    assert r.status_code == 422 and all(p.startswith("filter") for p in problem_paths(r)), r.text
    assert problem_paths(r), r.text
    ok = {"_and": [{"name": f"n{i}"} for i in range(200)]}
    assert (await search(api, {"filter": ok})).status_code == 200
    too_many = {"_and": [{"name": f"n{i}"} for i in range(201)]}
    r = await search(api, {"filter": too_many})
    assert r.status_code == 422 and problem_paths(r), r.text
    assert all(p.startswith("filter") for p in problem_paths(r)), r.text
    ok = {"filter": {"name": {"_in": [str(i) for i in range(1000)]}}}
    assert (await search(api, ok)).status_code == 200
    r = await search(api, {"filter": {"name": {"_in": [str(i) for i in range(1001)]}}})
    assert r.status_code == 422, r.text
    assert "filter.name._in" in problem_paths(r), r.text


async def test_forged_cursor_is_400(api: Api) -> None:
    for i in range(3):
        await create_event(api, code=f"C{i}")
    page = await search(api, {"limit": 1})
    cursor = page.json()["next"]
    assert cursor
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for forged in (flipped, "abc", "", "eyJ0IjoxfQ", "%00", "a" * 5000):
        r = await search(api, {"limit": 1, "after": forged})
        assert r.status_code == 400, (forged, r.text)
        r = await api.client.get(
            "/v3/crud/event", params={"limit": "1", "after": forged}, headers=api.a.headers()
        )
        assert r.status_code == 400, (forged, r.text)
    r = await search(api, {"limit": 1, "after": flipped})
    assert r.status_code == 400, r.text


# -- random JSON ------------------------------------------------------------------------------

FIELDS = ["name", "code", "status", "starts_at", "ends_at", "timezone", "venue", "capacity"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
RANDOM = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@RANDOM
@given(value=json_values)
async def test_random_json_create_never_500(api: Api, value: Any) -> None:
    r = await post_raw(api, "event", msgspec.json.encode(value))
    assert r.status_code in ALLOWED, r.text


@RANDOM
@given(
    value=json_values
    | st.fixed_dictionaries(
        {},
        optional={
            "filter": json_values,
            "sort": json_values,
            "limit": json_values,
            "after": json_values,
            "fields": json_values,
            "include": json_values,
            "count": json_values,
        },
    )
)
async def test_random_json_search_never_500(api: Api, value: Any) -> None:
    r = await post_raw(api, "event/search", msgspec.json.encode(value))
    assert r.status_code in ALLOWED, r.text


# -- bodies that cost work, not bytes -------------------------------------------------------


@HTTP_ONLY
@pytest.mark.parametrize("path", ["event", "event/search"])
async def test_sixty_thousand_unknown_keys_get_the_capped_answer(api: Api, path: str) -> None:
    keys = {f"k{i}": 1 for i in range(60_000)}
    body = keys if path == "event" else {"filter": {"_or": [{k: 1} for k in keys]}}
    r = await post_raw(api, path, msgspec.json.encode(body))
    assert r.status_code == 422, r.text
    assert 1 <= len(r.json()["errors"]) <= 50
    assert len(r.content) < 10_000


async def test_filters_past_what_a_driver_binds_are_422(api: Api) -> None:
    """A LIKE pattern past SQLite's limit, and more values than asyncpg binds (32,767)."""
    r = await search(api, {"filter": {"name": {"_like": "%a" * 30_000}}})
    assert r.status_code == 422, r.text
    assert problem_paths(r) == {"filter.name._like"}
    values = [f"v{i}" for i in range(1000)]
    many = {"filter": {"_and": [{"name": {"_in": values}} for _ in range(40)]}}
    r = await search(api, many)
    assert r.status_code == 422, r.text
    assert problem_paths(r) == {"filter._and[10].name._in"}
    ok = {"filter": {"_and": [{"name": {"_in": values}} for _ in range(10)]}}
    r = await search(api, ok)
    assert r.status_code == 200, r.text


@HTTP_ONLY
async def test_thousands_of_unknown_query_parameters_get_fifty_errors(api: Api) -> None:
    query = "&".join(f"p{i}=1" for i in range(5_000))
    r = await api.client.get(f"/v3/crud/event?{query}", headers=api.a.headers())
    assert r.status_code == 422, r.text
    assert len(r.json()["errors"]) == 50
