"""JSON request bodies over HTTP: media type, syntax before shape, and the order of refusals.

A JSON route takes `application/json`, `application/*+json` (parameters allowed) or no
`Content-Type`; any other declared type is 415 (SPEC 5). Text that is not JSON is 400 and
JSON of the wrong shape 422, whatever the route (CRUD writes, search, login, actions).
Authentication comes before anything about the path (SPEC 4).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import Api

EVENT = b'{"name": "Gala", "starts_at": "2027-03-14T09:00:00Z"}'
HTTP_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
ACCEPTED_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/merge-patch+json",
    "application/vnd.aether+json; version=3",
]
REFUSED_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/xml",
    "multipart/form-data; boundary=x",
    "text/json",
    "application/jsonx",
    "application/json-seq",
    "",
    "garbage",
]


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (status, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert not body["detail"].startswith(":") and not body["detail"].startswith(" "), body
    return body


async def _send(
    api: Api, method: str, url: str, body: bytes, content_type: str | None, auth: bool = True
) -> Any:
    headers = api.a.headers() if auth else {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await api.client.request(method, url, content=body, headers=headers)


async def _event_url(api: Api) -> str:
    r = await _send(api, "POST", "/v3/crud/event", EVENT, "application/json")
    assert r.status_code == 201, r.text
    return f"/v3/crud/event/{r.json()['id']}"


def _login(api: Api) -> bytes:
    creds = {"account": api.a.slug, "email": f"owner@{api.a.slug}.test"}
    return json.dumps({**creds, "password": "correct horse battery"}).encode()


# -- media types --------------------------------------------------------------------------------


@HTTP_ONLY
@pytest.mark.parametrize("content_type", ACCEPTED_TYPES)
async def test_json_media_types_are_accepted(api: Api, content_type: str | None) -> None:
    r = await _send(api, "POST", "/v3/crud/event", EVENT, content_type)
    assert r.status_code == 201, (content_type, r.text)
    item = r.headers["location"]
    r = await _send(api, "PATCH", item, b'{"name": "Ball"}', content_type)
    assert r.status_code == 200, (content_type, r.text)
    r = await _send(api, "POST", "/v3/crud/event/search", b'{"limit": 1}', content_type)
    assert r.status_code == 200, (content_type, r.text)
    r = await _send(api, "POST", "/v3/auth/login", _login(api), content_type, auth=False)
    assert r.status_code == 200, (content_type, r.text)


@HTTP_ONLY
@pytest.mark.parametrize("content_type", REFUSED_TYPES)
async def test_other_media_types_are_415_and_change_nothing(api: Api, content_type: str) -> None:
    item = await _event_url(api)
    before = (await api.client.get(item, headers=api.a.headers())).json()
    listed = await api.client.get("/v3/crud/event", headers=api.a.headers())
    count = len(listed.json()["data"])
    cases = [
        ("POST", "/v3/crud/event", EVENT, True),
        ("PATCH", item, b'{"name": "Ball"}', True),
        ("POST", "/v3/crud/event/search", b"{}", True),
        ("POST", "/v3/auth/login", _login(api), False),
        ("POST", "/v3/action/api_key", b'{"name": "k", "role": "viewer"}', True),
    ]
    for method, url, body, auth in cases:
        r = await _send(api, method, url, body, content_type, auth=auth)
        problem = _problem(r, 415)
        assert "application/json" in problem["detail"], problem
    assert (await api.client.get(item, headers=api.a.headers())).json() == before
    listed = await api.client.get("/v3/crud/event", headers=api.a.headers())
    assert len(listed.json()["data"]) == count


@HTTP_ONLY
async def test_role_and_route_are_checked_before_the_media_type(api: Api) -> None:
    r = await api.client.post(
        "/v3/crud/event",
        content=EVENT,
        headers={**api.a.headers("viewer"), "Content-Type": "text/plain"},
    )
    _problem(r, 403)
    r = await _send(api, "POST", "/v3/crud/nope", EVENT, "text/plain")
    _problem(r, 404)


# -- syntax first, then shape -----------------------------------------------------------------

NOT_JSON = [b"[1, 2", b'{"name": "Gala"', b"{'a': 1}", b"nope", b"[1, 2]]", b'{"a": 1} x', b"\xff"]
WRONG_SHAPE = [b"[1, 2]", b"1", b'"text"', b"null", b"true"]


@HTTP_ONLY
async def test_text_that_is_not_json_is_400_on_every_json_route(api: Api) -> None:
    item = await _event_url(api)
    for body in NOT_JSON:
        for method, url, auth in [
            ("POST", "/v3/crud/event", True),
            ("PATCH", item, True),
            ("POST", "/v3/crud/event/search", True),
            ("POST", "/v3/auth/login", False),
            ("POST", "/v3/action/api_key", True),
        ]:
            r = await _send(api, method, url, body, "application/json", auth=auth)
            problem = _problem(r, 400)
            assert problem["detail"].startswith("malformed JSON"), (url, body, problem)


@HTTP_ONLY
async def test_json_of_the_wrong_shape_is_422_with_a_clean_detail(api: Api) -> None:
    item = await _event_url(api)
    for body in WRONG_SHAPE:
        for method, url, auth in [
            ("POST", "/v3/crud/event", True),
            ("PATCH", item, True),
            ("POST", "/v3/crud/event/search", True),
            ("POST", "/v3/auth/login", False),
            ("POST", "/v3/action/api_key", True),
        ]:
            r = await _send(api, method, url, body, "application/json", auth=auth)
            problem = _problem(r, 422)
            assert problem["errors"], (url, body, problem)


@HTTP_ONLY
@pytest.mark.parametrize("key", ["limit", "offset"])
@pytest.mark.parametrize("value", ["99999999999999999999999", "-99999999999999999999999"])
async def test_out_of_range_integer_query_parameters_say_so(api: Api, key: str, value: str) -> None:
    r = await api.client.get(f"/v3/crud/event?{key}={value}", headers=api.a.headers())
    problem = _problem(r, 422)
    [error] = problem["errors"]
    assert error["path"] == key and "out of range" in error["message"], problem
    body = b'{"%s": %s}' % (key.encode(), value.encode())
    r = await _send(api, "POST", "/v3/crud/event/search", body, None)
    [error] = _problem(r, 422)["errors"]
    assert error["path"] == key and "out of range" in error["message"], r.text


@HTTP_ONLY
async def test_integral_numbers_are_integers_in_a_search_body(api: Api) -> None:
    # JSON Schema's `integer` accepts 10.0; so does the API.
    r = await _send(api, "POST", "/v3/crud/event/search", b'{"limit": 10.0}', None)
    assert r.status_code == 200, r.text
    r = await _send(api, "POST", "/v3/crud/event/search", b'{"limit": 1.5}', None)
    assert _problem(r, 422)["errors"][0]["path"] == "limit"


# -- order of refusals --------------------------------------------------------------------------


@HTTP_ONLY
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v3/crud/nope"),
        ("GET", "/v3/crud/nope/Xq3vZ8kLm2Np4Rt6Yw9BcA"),
        ("POST", "/v3/crud/nope/search"),
        ("GET", "/v3/crud/nope/schema"),
        ("GET", "/v3/crud/event/Xq3vZ8kLm2Np4Rt6Yw9BcA/nope"),
        ("DELETE", "/v3/crud/account"),
        ("GET", "/v3/crud/schema"),
    ],
)
async def test_unauthenticated_requests_are_401_before_the_path_is_checked(
    api: Api, method: str, path: str
) -> None:
    r = await api.client.request(method, path)
    _problem(r, 401)
    assert r.headers["www-authenticate"]
    r = await api.client.request(method, path, headers={"X-API-Key": "not-a-key"})
    _problem(r, 401)
    authenticated = await api.client.request(method, path, headers=api.a.headers())
    assert authenticated.status_code in (200, 404, 405), authenticated.text


# -- login and action bodies as their schemas say -------------------------------------------


async def test_login_and_api_key_bodies_with_nul_are_client_errors(api: Api) -> None:
    creds = json.loads(_login(api))
    for key in ("account", "email", "password"):
        body = json.dumps({**creds, key: creds[key] + "\x00"}).encode()
        r = await _send(api, "POST", "/v3/auth/login", body, None, auth=False)
        assert r.status_code in (401, 422), (key, r.status_code, r.text)
    body = json.dumps({"name": "k\x00", "role": "viewer"}).encode()
    r = await _send(api, "POST", "/v3/action/api_key", body, None)
    assert _problem(r, 422)["errors"][0]["path"] == "name"
