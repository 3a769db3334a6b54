"""Statements per request: the budgets the hot paths are built to (counted, never timed).

A caller seen in the last few seconds authenticates without SQL; a read is one statement
with its ancestors checked inside it; writes are as few single statements as they can be,
with no BEGIN/COMMIT, SAVEPOINT or pre-ping around them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.conftest import Api
from tests.statements import count_statements

EVENT = {"name": "Budget", "starts_at": "2027-05-01T09:00:00Z"}
SESSION = {"title": "Talk", "starts_at": "2027-05-01T10:00:00Z", "room": "A"}
TRANSACTION_WORDS = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


async def _seed(api: Api) -> tuple[str, str]:
    h = api.a.headers()
    event = await api.client.post("/v3/crud/event", json=EVENT, headers=h)
    assert event.status_code == 201, event.text
    eid = event.json()["id"]
    session = await api.client.post(f"/v3/crud/event/{eid}/event_session", json=SESSION, headers=h)
    assert session.status_code == 201, session.text
    return eid, session.json()["id"]


async def _count(api: Api, method: str, url: str, **kwargs: Any) -> tuple[int, list[str], Any]:
    with count_statements(api.runtime) as seen:
        r = await api.client.request(method, url, **kwargs)
    assert r.status_code < 300, r.text
    assert not [s for s in seen if s.strip().upper().startswith(TRANSACTION_WORDS)], seen
    return len(seen), seen, r


async def test_reads_cost_one_statement_each(api: Api) -> None:
    eid, sid = await _seed(api)
    h = {"headers": api.a.headers()}
    assert (await _count(api, "GET", f"/v3/crud/event/{eid}", **h))[0] == 1
    assert (await _count(api, "GET", f"/v3/crud/event/{eid}/event_session/{sid}", **h))[0] == 1
    assert (await _count(api, "GET", "/v3/crud/event?sort=-starts_at&limit=50", **h))[0] == 1
    assert (await _count(api, "GET", f"/v3/crud/event/{eid}/event_session", **h))[0] == 1
    assert (await _count(api, "GET", "/v3/crud/event?count=true", **h))[0] == 2
    body = {"filter": {"name": {"_eq": "Budget"}, "starts_at": {"_gte": "2027-01-01T00:00:00Z"}}}
    assert (await _count(api, "POST", "/v3/crud/event/search", json=body, **h))[0] == 1
    with_include = {**body, "include": ["event_session"]}
    assert (await _count(api, "POST", "/v3/crud/event/search", json=with_include, **h))[0] == 2


async def test_writes_stay_within_their_budget(api: Api) -> None:
    eid, sid = await _seed(api)
    h = api.a.headers()
    n, _, created = await _count(api, "POST", "/v3/crud/event", json=EVENT, headers=h)
    assert n == 1  # INSERT … RETURNING
    n, _, _ = await _count(
        api, "POST", f"/v3/crud/event/{eid}/event_session", json=SESSION, headers=h
    )
    assert n <= 2  # the parent, then the INSERT
    new = created.json()
    n, _, patched = await _count(
        api,
        "PATCH",
        f"/v3/crud/event/{new['id']}",
        json={"name": "Renamed"},
        headers={**h, "If-Match": created.headers["etag"]},
    )
    assert n <= 2
    assert patched.json()["version"] == 2
    n, _, _ = await _count(api, "DELETE", f"/v3/crud/event/{eid}/event_session/{sid}", headers=h)
    assert n <= 2


async def test_write_answers_equal_what_a_read_returns(api: Api) -> None:
    h = api.a.headers()
    created = await api.client.post(
        "/v3/crud/event",
        json={**EVENT, "starts_at": "2027-05-01T11:00:00+02:00", "capacity": 10},
        headers=h,
    )
    assert created.status_code == 201, created.text
    url = f"/v3/crud/event/{created.json()['id']}"
    assert (await api.client.get(url, headers=h)).json() == created.json()
    patched = await api.client.patch(
        url, json={"starts_at": "2027-06-01T08:30:00.5-05:00", "venue": "Hall"}, headers=h
    )
    assert patched.status_code == 200, patched.text
    assert (await api.client.get(url, headers=h)).json() == patched.json()


async def test_a_recently_seen_key_authenticates_without_sql(api: Api) -> None:
    h = {"headers": api.a.headers("viewer")}
    await api.client.get("/v3/crud/event", **h)
    n, seen, _ = await _count(api, "GET", "/v3/crud/event", **h)
    assert n == 1, seen  # the list alone


async def test_concurrent_patches_without_if_match_all_apply(api: Api) -> None:
    h = api.a.headers()
    created = await api.client.post("/v3/crud/event", json=EVENT, headers=h)
    url = f"/v3/crud/event/{created.json()['id']}"
    answers = await asyncio.gather(
        *(api.client.patch(url, json={"capacity": i + 1}, headers=h) for i in range(8))
    )
    assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
    assert (await api.client.get(url, headers=h)).json()["version"] == 1 + 8


async def test_if_match_is_compared_strongly_and_checked_for_form(api: Api) -> None:
    h = api.a.headers()
    created = await api.client.post("/v3/crud/event", json=EVENT, headers=h)
    url = f"/v3/crud/event/{created.json()['id']}"
    weak = await api.client.patch(url, json={"capacity": 2}, headers={**h, "If-Match": 'W/"1"'})
    assert weak.status_code == 412, weak.text
    bare = await api.client.patch(url, json={"capacity": 2}, headers={**h, "If-Match": "1"})
    assert bare.status_code == 400, bare.text
    assert "quoted" in bare.json()["detail"]
    ok = await api.client.patch(url, json={"capacity": 2}, headers={**h, "If-Match": '"1"'})
    assert ok.status_code == 200, ok.text
