"""Generated CRUD over HTTP on every backend: nesting, ETags, races, validation, tenancy."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path

from models.base import utcnow
from tests.integration.conftest import Api, make_api, make_settings

EVENT = {"name": "Spring Gala", "starts_at": "2027-03-14T09:00:00+01:00", "code": "GALA-1"}
PUBLIC_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


async def create(api: Api, path: str, body: dict, role: str = "owner", tenant: str = "a") -> dict:
    t = api.a if tenant == "a" else api.b
    r = await api.client.post(f"/v3/crud/{path}", json=body, headers=t.headers(role))
    assert r.status_code == 201, r.text
    return r.json()


def assert_no_integers_in_ids(body: dict) -> None:
    for key, value in body.items():
        if key == "id" or key.endswith("_id"):
            assert isinstance(value, str) and PUBLIC_ID.match(value), (key, value)


async def test_event_lifecycle(api: Api) -> None:
    h = api.a.headers()
    r = await api.client.post("/v3/crud/event", json=EVENT, headers=h)
    assert r.status_code == 201, r.text
    event = r.json()
    assert_no_integers_in_ids(event)
    assert event["starts_at"] == "2027-03-14T08:00:00Z"
    assert event["status"] == "draft" and event["version"] == 1 and event["metadata"] == {}
    assert event["account_id"] == api.a.account_id
    assert r.headers["location"] == f"/v3/crud/event/{event['id']}"
    assert r.headers["cache-control"] == "private, no-cache"
    assert "Authorization" in r.headers["vary"]
    etag = r.headers["etag"]

    got = await api.client.get(f"/v3/crud/event/{event['id']}", headers=h)
    assert got.status_code == 200 and got.json() == event and got.headers["etag"] == etag
    cached = await api.client.get(
        f"/v3/crud/event/{event['id']}", headers={**h, "If-None-Match": etag}
    )
    assert cached.status_code == 304

    patched = await api.client.patch(
        f"/v3/crud/event/{event['id']}", json={"venue": "Hall"}, headers={**h, "If-Match": etag}
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["version"] == 2 and body["venue"] == "Hall"
    assert body["updated_at"] > event["updated_at"]
    assert patched.headers["etag"] != etag
    again = await api.client.get(f"/v3/crud/event/{event['id']}", headers=h)
    assert again.json() == body

    stale = await api.client.patch(
        f"/v3/crud/event/{event['id']}", json={"venue": "X"}, headers={**h, "If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"

    deleted = await api.client.delete(f"/v3/crud/event/{event['id']}", headers=h)
    assert deleted.status_code == 204
    gone = await api.client.get(f"/v3/crud/event/{event['id']}", headers=h)
    assert gone.status_code == 404


async def test_three_level_nesting_and_wrong_parent(api: Api) -> None:
    h = api.a.headers()
    event = await create(api, "event", EVENT)
    other = await create(api, "event", {**EVENT, "code": "OTHER"})
    base = f"account/{api.a.account_id}/event/{event['id']}/event_session"
    r = await api.client.post(
        f"/v3/crud/{base}",
        json={"title": "Keynote", "starts_at": "2027-03-14T10:00:00Z"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    session = r.json()
    assert session["event_id"] == event["id"]
    assert r.headers["location"] == f"/v3/crud/{base}/{session['id']}"
    nested = await api.client.get(f"/v3/crud/{base}/{session['id']}", headers=h)
    assert nested.status_code == 200 and nested.json() == session
    wrong = await api.client.get(
        f"/v3/crud/event/{other['id']}/event_session/{session['id']}", headers=h
    )
    assert wrong.status_code == 404
    not_child = await api.client.get(f"/v3/crud/event_session/{session['id']}/event", headers=h)
    assert not_child.status_code == 404
    mismatch = await api.client.post(
        f"/v3/crud/event/{other['id']}/event_session",
        json={"title": "x", "starts_at": "2027-03-14T10:00:00Z", "event_id": event["id"]},
        headers=h,
    )
    assert mismatch.status_code == 422
    assert mismatch.json()["errors"][0]["path"] == "event_id"


async def test_validation_errors_name_each_field(api: Api) -> None:
    r = await api.client.post(
        "/v3/crud/event",
        json={
            "id": "x",
            "account_id": "y",
            "version": 3,
            "nmae": "typo",
            "starts_at": "2027-03-14T09:00:00",
            "capacity": -1,
            "status": "OPEN",
        },
        headers=api.a.headers(),
    )
    assert r.status_code == 422
    problem = r.json()
    paths = {e["path"] for e in problem["errors"]}
    assert {"id", "account_id", "version", "nmae", "starts_at", "capacity", "status"} <= paths
    assert any('did you mean "name"' in e["message"] for e in problem["errors"])
    assert problem["status"] == 422 and problem["request_id"]

    missing = await api.client.post("/v3/crud/event", json={}, headers=api.a.headers())
    assert {e["path"] for e in missing.json()["errors"]} == {"name", "starts_at"}

    cross = await api.client.post(
        "/v3/crud/event",
        json={**EVENT, "ends_at": "2027-03-13T09:00:00Z"},
        headers=api.a.headers(),
    )
    assert cross.status_code == 422 and cross.json()["errors"][0]["path"] == "ends_at"

    malformed = await api.client.post(
        "/v3/crud/event", content=b"{not json", headers=api.a.headers()
    )
    assert malformed.status_code == 400
    array = await api.client.post("/v3/crud/event", json=[1], headers=api.a.headers())
    assert array.status_code == 422


async def test_badge_layout_is_validated_with_its_path(api: Api) -> None:
    event = await create(api, "event", EVENT)
    r = await api.client.post(
        f"/v3/crud/event/{event['id']}/event_badge_template",
        json={
            "name": "Default",
            "width_mm": 90,
            "height_mm": 600,
            "layout": {"elements": [{"field": "name", "x": 1, "y": 1, "font_size": 0}]},
        },
        headers=api.a.headers(),
    )
    assert r.status_code == 422
    paths = {e["path"] for e in r.json()["errors"]}
    assert paths == {"height_mm", "layout.elements[0].font_size"}


async def test_unique_conflict_and_missing_reference(api: Api) -> None:
    await create(api, "event", EVENT)
    dup = await api.client.post("/v3/crud/event", json=EVENT, headers=api.a.headers())
    assert dup.status_code == 409
    assert dup.json()["errors"] == [{"path": "code", "message": "already taken"}]
    # The same code in another account is fine: uniqueness is per account.
    await create(api, "event", EVENT, tenant="b")
    event = await create(api, "event", {**EVENT, "code": "G2"})
    bad_ref = await api.client.post(
        f"/v3/crud/event/{event['id']}/event_file",
        json={"file_id": "A" * 22},
        headers=api.a.headers(),
    )
    assert bad_ref.status_code == 422 and bad_ref.json()["errors"][0]["path"] == "file_id"


async def test_cascade_and_blocking_delete(api: Api) -> None:
    rt = api.runtime
    event = await create(api, "event", EVENT)
    session = await create(
        api,
        f"event/{event['id']}/event_session",
        {"title": "S", "starts_at": "2027-03-14T10:00:00Z"},
    )
    from engine.provisioning import find_account
    from models.base import new_public_id

    async with rt.engine.begin() as conn:
        account_pk, _ = await find_account(conn, rt.tables, "alpha")  # type: ignore[misc]
        now = utcnow()
        file_id = new_public_id()
        await conn.execute(
            rt.tables["file"]
            .insert()
            .values(
                id_random=file_id,
                account_id=account_pk,
                name="a.txt",
                sha256="0" * 64,
                size=1,
                mime_type="text/plain",
                created_at=now,
                updated_at=now,
                version=1,
            )
        )
    await create(api, f"event/{event['id']}/event_file", {"file_id": file_id})
    blocked = await api.client.delete(f"/v3/crud/file/{file_id}", headers=api.a.headers())
    assert blocked.status_code == 409 and "event_file" in blocked.json()["detail"]
    gone = await api.client.delete(f"/v3/crud/event/{event['id']}", headers=api.a.headers())
    assert gone.status_code == 204
    r = await api.client.get(f"/v3/crud/event_session/{session['id']}", headers=api.a.headers())
    assert r.status_code == 404
    freed = await api.client.delete(f"/v3/crud/file/{file_id}", headers=api.a.headers())
    assert freed.status_code == 204


async def test_concurrent_updates_with_same_if_match_let_one_win(api: Api) -> None:
    event = await create(api, "event", EVENT)
    h = {**api.a.headers(), "If-Match": '"1"'}

    async def patch(n: int) -> int:
        r = await api.client.patch(
            f"/v3/crud/event/{event['id']}", json={"venue": f"v{n}"}, headers=h
        )
        return r.status_code

    statuses = await asyncio.gather(*(patch(n) for n in range(6)))
    assert sorted(statuses).count(200) == 1, statuses
    assert set(statuses) <= {200, 412, 503}
    final = (await api.client.get(f"/v3/crud/event/{event['id']}", headers=api.a.headers())).json()
    assert final["version"] == 2


async def test_tenants_cannot_see_each_other(api: Api) -> None:
    event = await create(api, "event", EVENT, tenant="b")
    for method, path in (
        ("GET", f"/v3/crud/event/{event['id']}"),
        ("PATCH", f"/v3/crud/event/{event['id']}"),
        ("DELETE", f"/v3/crud/event/{event['id']}"),
        ("GET", f"/v3/crud/event/{event['id']}/event_session"),
        ("GET", f"/v3/crud/account/{api.b.account_id}/event/{event['id']}"),
        ("GET", f"/v3/crud/account/{api.a.account_id}/event/{event['id']}"),
    ):
        r = await api.client.request(method, path, json={}, headers=api.a.headers())
        assert r.status_code == 404, (method, path, r.status_code)
    unknown = await api.client.get("/v3/crud/event/" + "Z" * 22, headers=api.a.headers())
    assert unknown.status_code == 404
    integer = await api.client.get("/v3/crud/event/1", headers=api.a.headers())
    assert integer.status_code == 404


async def test_roles_and_methods(api: Api) -> None:
    viewer = api.a.headers("viewer")
    r = await api.client.post("/v3/crud/event", json={"bogus": 1}, headers=viewer)
    assert r.status_code == 403  # the role is checked before the body
    r = await api.client.get("/v3/crud/user", headers=api.a.headers("editor"))
    assert r.status_code == 403
    r = await api.client.post("/v3/crud/file", json={}, headers=api.a.headers())
    assert r.status_code == 405 and "POST" not in r.headers["allow"]
    r = await api.client.delete(f"/v3/crud/account/{api.a.account_id}", headers=api.a.headers())
    assert r.status_code == 405
    r = await api.client.get("/v3/crud/event")
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    r = await api.client.get("/v3/crud/event", headers={"X-API-Key": "ae_nope"})
    assert r.status_code == 401


async def test_user_password_is_write_only_and_hashed(api: Api) -> None:
    user = await create(
        api,
        "user",
        {"email": "ed@alpha.test", "password": "a very long password", "role": "editor"},
    )
    assert "password" not in user and "password_hash" not in user
    short = await api.client.post(
        "/v3/crud/user",
        json={"email": "x@alpha.test", "password": "short"},
        headers=api.a.headers(),
    )
    assert short.status_code == 422 and short.json()["errors"][0]["path"] == "password"
    login = await api.client.post(
        "/v3/auth/login",
        json={"account": "alpha", "email": "ed@alpha.test", "password": "a very long password"},
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    r = await api.client.get("/v3/crud/event", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    bad = await api.client.post(
        "/v3/auth/login",
        json={"account": "alpha", "email": "ed@alpha.test", "password": "wrong password!!"},
    )
    assert bad.status_code == 401


async def test_revoked_api_key_is_refused_on_next_request(api: Api) -> None:
    r = await api.client.post(
        "/v3/action/api_key", json={"name": "ci", "role": "editor"}, headers=api.a.headers()
    )
    assert r.status_code == 201, r.text
    made = r.json()
    key = made.pop("key")
    assert made["prefix"] and key.startswith("ae_")
    listed = await api.client.get(f"/v3/crud/api_key/{made['id']}", headers=api.a.headers())
    assert "key" not in listed.json() and "secret_hash" not in listed.json()
    assert (await api.client.get("/v3/crud/event", headers={"X-API-Key": key})).status_code == 200
    revoke = await api.client.patch(
        f"/v3/crud/api_key/{made['id']}",
        json={"revoked_at": "2020-01-01T00:00:00Z"},
        headers=api.a.headers(),
    )
    assert revoke.status_code == 200
    assert (await api.client.get("/v3/crud/event", headers={"X-API-Key": key})).status_code == 401
    too_high = await api.client.post(
        "/v3/action/api_key", json={"name": "x", "role": "owner"}, headers=api.a.headers("admin")
    )
    assert too_high.status_code == 403


async def test_system_key_acts_through_account_paths(api: Api) -> None:
    h = {"X-API-Key": api.system_key}
    r = await api.client.post(f"/v3/crud/account/{api.b.account_id}/event", json=EVENT, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["account_id"] == api.b.account_id
    flat = await api.client.get("/v3/crud/event", headers=h)
    assert flat.status_code == 403


async def test_no_role_above_your_own_can_be_granted(api: Api) -> None:
    admin = api.a.headers("admin")
    r = await api.client.post(
        "/v3/crud/user", json={"email": "boss@alpha.test", "role": "owner"}, headers=admin
    )
    assert r.status_code == 403
    made = await create(api, "user", {"email": "staff@alpha.test", "role": "editor"}, role="admin")
    r = await api.client.patch(f"/v3/crud/user/{made['id']}", json={"role": "owner"}, headers=admin)
    assert r.status_code == 403
    owner = await create(api, "user", {"email": "co@alpha.test", "role": "owner"})
    r = await api.client.patch(f"/v3/crud/user/{owner['id']}", json={"name": "x"}, headers=admin)
    assert r.status_code == 403
    r = await api.client.delete(f"/v3/crud/user/{owner['id']}", headers=admin)
    assert r.status_code == 403
    r = await api.client.patch(f"/v3/crud/user/{made['id']}", json={"role": "admin"}, headers=admin)
    assert r.status_code == 200 and r.json()["role"] == "admin"


async def test_last_used_at_is_written_at_most_once_a_minute(api: Api) -> None:
    r = await api.client.post(
        "/v3/action/api_key", json={"name": "ci", "role": "viewer"}, headers=api.a.headers()
    )
    made = r.json()
    key = {"X-API-Key": made["key"]}
    assert made["last_used_at"] is None

    async def last_used() -> str | None:
        got = await api.client.get(f"/v3/crud/api_key/{made['id']}", headers=api.a.headers())
        value: str | None = got.json()["last_used_at"]
        return value

    for _ in range(3):
        assert (await api.client.get("/v3/crud/event", headers=key)).status_code == 200
    first = await last_used()
    assert first is not None
    for _ in range(3):
        await api.client.get("/v3/crud/event", headers=key)
    assert await last_used() == first  # not rewritten within the minute
    api_key = api.runtime.tables["api_key"]
    async with api.runtime.engine.begin() as conn:  # age the stamp by two minutes
        old = utcnow() - dt.timedelta(minutes=2)
        await conn.execute(
            api_key.update().where(api_key.c.id_random == made["id"]).values(last_used_at=old)
        )
    api.runtime.principals.clear()  # a change behind the API's back: forget the cached key
    await api.client.get("/v3/crud/event", headers=key)
    assert (await last_used()) > first


async def test_a_create_refused_after_its_first_statements_leaves_nothing(api: Api) -> None:
    """The account and the references are read before the INSERT; a reference to a row that
    does not exist (or lives in another account) is a 422 and no row is written."""
    h = api.a.headers()
    event = await create(api, "event", EVENT)
    theirs = await create(api, "event", {**EVENT, "code": "BETA-1"}, tenant="b")
    session = {"title": "Keynote", "starts_at": "2027-03-14T10:00:00Z"}
    for missing in ("A" * 22, theirs["id"]):
        r = await api.client.post(
            "/v3/crud/event_session", json={**session, "event_id": missing}, headers=h
        )
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["path"] == "event_id"
    listed = await api.client.get("/v3/crud/event_session", headers=h)
    assert listed.json()["data"] == []
    others = await api.client.get("/v3/crud/event_session", headers=api.b.headers())
    assert others.json()["data"] == []
    made = await api.client.post(
        "/v3/crud/event_session", json={**session, "event_id": event["id"]}, headers=h
    )
    assert made.status_code == 201, made.text
    listed = await api.client.get("/v3/crud/event_session", headers=h)
    assert [s["id"] for s in listed.json()["data"]] == [made.json()["id"]]


async def test_conditional_requests_as_the_readme_describes(api: Api) -> None:
    h = api.a.headers()
    event = await create(api, "event", EVENT)
    url = f"/v3/crud/event/{event['id']}"
    for inm in ('"1"', 'W/"1"', '"9", W/"1"', "*"):
        r = await api.client.get(url, headers={**h, "If-None-Match": inm})
        assert r.status_code == 304, (inm, r.text)
        assert r.headers["etag"] == '"1"' and r.content == b""
    assert (await api.client.get(url, headers={**h, "If-None-Match": '"2"'})).status_code == 200
    for method, body in (("PATCH", {"venue": "Hall"}), ("DELETE", None)):
        stale = await api.client.request(method, url, json=body, headers={**h, "If-Match": '"7"'})
        assert stale.status_code == 412, (method, stale.text)
        weak = await api.client.request(method, url, json=body, headers={**h, "If-Match": 'W/"1"'})
        assert weak.status_code == 412, (method, weak.text)
    assert (await api.client.get(url, headers=h)).json() == event


async def test_if_match_is_required_when_configured(database_url: str, tmp_path: Path) -> None:
    made = await make_api(make_settings(database_url, tmp_path, require_if_match=True), None)
    try:
        async with made.client:
            h = made.a.headers()
            r = await made.client.post("/v3/crud/event", json=EVENT, headers=h)
            assert r.status_code == 201, r.text
            url = f"/v3/crud/event/{r.json()['id']}"
            for method, body in (("PATCH", {"venue": "Hall"}), ("DELETE", None)):
                r = await made.client.request(method, url, json=body, headers=h)
                assert r.status_code == 428, (method, r.text)
            r = await made.client.patch(
                url, json={"venue": "Hall"}, headers={**h, "If-Match": '"1"'}
            )
            assert r.status_code == 200, r.text
    finally:
        await made.runtime.close()
