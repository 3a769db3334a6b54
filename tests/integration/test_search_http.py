"""Search and list over HTTP on every backend: include without N+1, keyset pages, limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine import listing
from tests.integration.conftest import Api
from tests.statements import count_statements


async def _seed_events(api: Api, n: int, sessions: int = 0, prefix: str = "Event") -> list[str]:
    ids = []
    for i in range(n):
        r = await api.client.post(
            "/v3/crud/event",
            json={"name": f"{prefix} {i:03d}", "starts_at": f"2027-01-{1 + i % 28:02d}T10:00:00Z"},
            headers=api.a.headers(),
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        for s in range(sessions):
            r = await api.client.post(
                f"/v3/crud/event/{ids[-1]}/event_session",
                json={"title": f"S{s}", "starts_at": "2027-01-01T10:00:00Z", "room": f"R{s}"},
                headers=api.a.headers(),
            )
            assert r.status_code == 201
    return ids


class StatementCounter:
    def __init__(self, api: Api) -> None:
        self.runtime = api.runtime
        self.seen: list[str] = []

    def __enter__(self) -> StatementCounter:
        self._block = count_statements(self.runtime)
        self.seen = self._block.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._block.__exit__(None, None, None)

    @property
    def count(self) -> int:
        return len(self.seen)


async def test_include_two_levels_costs_the_same_for_5_or_50_results(api: Api) -> None:
    await _seed_events(api, 50, sessions=1)
    body = {"include": ["event_session", "account"], "limit": 50, "count": True}

    async def count_for(limit: int) -> tuple[int, dict[str, Any]]:
        with StatementCounter(api) as counter:
            r = await api.client.post(
                "/v3/crud/event/search", json={**body, "limit": limit}, headers=api.a.headers()
            )
        assert r.status_code == 200, r.text
        return counter.count, r.json()

    small, _ = await count_for(5)
    large, page = await count_for(50)
    assert small == large, (small, large)
    assert len(page["data"]) == 50 and page["total"] == 50
    first = page["data"][0]
    assert len(first["event_session"]) == 1
    assert first["event_session"][0]["event_id"] == first["id"]
    assert first["account"]["id"] == api.a.account_id


async def test_dotted_include_through_a_child_to_a_reference(api: Api) -> None:
    (event,) = await _seed_events(api, 1)
    r = await api.client.get(f"/v3/crud/event/{event}?fields=name", headers=api.a.headers())
    assert r.json() == {"id": event, "name": "Event 000"}
    r = await api.client.get(
        "/v3/crud/event",
        params={"include": "event_file.file,event_session", "fields": "name"},
        headers=api.a.headers(),
    )
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    assert item["event_file"] == [] and item["event_session"] == []


async def test_an_include_level_past_its_row_cap_is_422_never_cut(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "MAX_INCLUDE_ROWS", 4)
    await _seed_events(api, 3, sessions=2)  # six sessions in all

    async def search(limit: int, include: str) -> Any:
        body = {"include": [include], "limit": limit, "sort": ["name"]}
        return await api.client.post("/v3/crud/event/search", json=body, headers=api.a.headers())

    at_cap = await search(2, "event_session")
    assert at_cap.status_code == 200, at_cap.text
    assert [len(e["event_session"]) for e in at_cap.json()["data"]] == [2, 2]
    over = await search(3, "event_session")
    assert over.status_code == 422, over.text
    (error,) = over.json()["errors"]
    assert error["path"] == "include"
    assert "event_session" in error["message"] and "smaller limit" in error["message"]
    listed = await api.client.get(
        "/v3/crud/account",
        params={"include": "event.event_session"},
        headers=api.a.headers(),
    )
    assert listed.status_code == 422, listed.text
    assert "event.event_session" in listed.json()["errors"][0]["message"]


async def test_keyset_pages_survive_concurrent_inserts(api: Api) -> None:
    await _seed_events(api, 23)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5, "sort": "name"}
        if cursor:
            params["after"] = cursor
        r = await api.client.get("/v3/crud/event", params=params, headers=api.a.headers())
        assert r.status_code == 200, r.text
        page = r.json()
        seen.extend(item["id"] for item in page["data"])
        pages += 1
        # rows inserted between pages, before and after the cursor position
        await _seed_events(api, 1, prefix="AAA inserted")
        await _seed_events(api, 1, prefix="ZZZ inserted")
        cursor = page["next"]
        if cursor is None:
            break
        assert pages < 50
    assert len(seen) == len(set(seen)), "a row came twice"
    originals = await api.client.get(
        "/v3/crud/event/search",
        headers=api.a.headers(),
    )
    assert originals.status_code == 405  # search is POST only
    r = await api.client.post(
        "/v3/crud/event/search",
        json={"filter": {"name": {"_startswith": "Event"}}, "limit": 500},
        headers=api.a.headers(),
    )
    original_ids = {item["id"] for item in r.json()["data"]}
    assert original_ids <= set(seen), "a row that existed at the start was skipped"


async def test_cursor_is_bound_to_its_query_and_tamper_evident(api: Api) -> None:
    await _seed_events(api, 3)
    r = await api.client.get("/v3/crud/event?limit=1&sort=name", headers=api.a.headers())
    cursor = r.json()["next"]
    assert cursor
    other = await api.client.get(
        "/v3/crud/event",
        params={"limit": 1, "sort": "-name", "after": cursor},
        headers=api.a.headers(),
    )
    assert other.status_code == 400
    forged = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    r = await api.client.get(
        "/v3/crud/event",
        params={"limit": 1, "sort": "name", "after": forged},
        headers=api.a.headers(),
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"


async def test_filter_parameter_and_limits(api: Api) -> None:
    await _seed_events(api, 3)
    r = await api.client.get(
        "/v3/crud/event",
        params={
            "filter": json.dumps({"name": {"_in": ["Event 001", "Event 002"]}}),
            "count": "true",
        },
        headers=api.a.headers(),
    )
    assert r.status_code == 200 and r.json()["total"] == 2
    deep: dict[str, Any] = {"name": "x"}
    for _ in range(9):
        deep = {"_not": deep}
    r = await api.client.post(
        "/v3/crud/event/search", json={"filter": deep}, headers=api.a.headers()
    )
    assert r.status_code == 422 and r.json()["errors"][0]["path"].startswith("filter")
    r = await api.client.post(
        "/v3/crud/event/search",
        json={"filter": {"name": {"_in": [str(i) for i in range(1001)]}}},
        headers=api.a.headers(),
    )
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "filter.name._in"
    r = await api.client.get("/v3/crud/event?limit=abc", headers=api.a.headers())
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "limit"
    r = await api.client.get("/v3/crud/event?limit=501", headers=api.a.headers())
    assert r.status_code == 422
    r = await api.client.post("/v3/crud/event/search", content=b"{", headers=api.a.headers())
    assert r.status_code == 400
    r = await api.client.post(
        "/v3/crud/event/search", content=b"[" * 100_000, headers=api.a.headers()
    )
    assert r.status_code in (400, 413)
    r = await api.client.post(
        "/v3/crud/event/search",
        content=b'{"filter": {"name": "' + b"x" * (1024 * 1024) + b'"}}',
        headers=api.a.headers(),
    )
    assert r.status_code == 413
    r = await api.client.post(
        "/v3/crud/event/search",
        json={"filter": {"password": "x"}},
        headers=api.a.headers(),
    )
    assert r.status_code == 422


async def test_search_is_case_sensitive_where_the_spec_says(api: Api) -> None:
    await _seed_events(api, 1, prefix="Gala")
    headers = api.a.headers()

    async def total(flt: dict[str, Any]) -> int:
        r = await api.client.post(
            "/v3/crud/event/search", json={"filter": flt, "count": True}, headers=headers
        )
        assert r.status_code == 200, r.text
        return int(r.json()["total"])

    assert await total({"name": {"_eq": "gala 000"}}) == 0
    assert await total({"name": {"_eq": "Gala 000"}}) == 1
    assert await total({"name": {"_contains": "gala"}}) == 0
    assert await total({"name": {"_icontains": "GALA"}}) == 1
    assert await total({"name": {"_ilike": "gALa%"}}) == 1
    assert await total({"name": {"_like": "gala%"}}) == 0
    assert await total({"name": {"_contains": "%"}}) == 0


async def test_include_on_one_item_embeds_like_the_list(api: Api) -> None:
    (event,) = await _seed_events(api, 1, sessions=2)
    h = api.a.headers()
    listed = await api.client.get("/v3/crud/event", params={"include": "event_session"}, headers=h)
    assert listed.status_code == 200, listed.text
    one = await api.client.get(f"/v3/crud/event/{event}?include=event_session", headers=h)
    assert one.status_code == 200, one.text
    item = one.json()
    assert item == listed.json()["data"][0]
    assert sorted(s["title"] for s in item["event_session"]) == ["S0", "S1"]
    assert all(s["event_id"] == event for s in item["event_session"])
    parent = await api.client.get(f"/v3/crud/event/{event}?include=account", headers=h)
    assert parent.status_code == 200, parent.text
    assert parent.json()["account"]["id"] == api.a.account_id
    assert parent.json()["account"]["slug"] == "alpha"


async def test_a_bad_include_or_parameter_on_one_item_is_the_lists_422(api: Api) -> None:
    (event,) = await _seed_events(api, 1)
    h = api.a.headers()
    listed = await api.client.get("/v3/crud/event?include=bogus", headers=h)
    one = await api.client.get(f"/v3/crud/event/{event}?include=bogus", headers=h)
    assert listed.status_code == one.status_code == 422, one.text
    assert one.headers["content-type"] == listed.headers["content-type"]
    assert one.headers["content-type"].startswith("application/problem+json")
    problem, expected = one.json(), listed.json()
    assert problem["errors"] == expected["errors"]
    assert {k: problem[k] for k in ("type", "title", "status")} == {
        k: expected[k] for k in ("type", "title", "status")
    }
    unknown = await api.client.get(f"/v3/crud/event/{event}?limit=1", headers=h)
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["errors"] == [{"path": "limit", "message": "unknown query parameter"}]


async def test_include_with_fields_embeds_the_parent_and_keeps_only_what_was_asked(
    api: Api,
) -> None:
    (event,) = await _seed_events(api, 1, sessions=2)
    h = api.a.headers()
    params = {"include": "event", "fields": "title"}
    listed = await api.client.get("/v3/crud/event_session", params=params, headers=h)
    assert listed.status_code == 200, listed.text
    rows = listed.json()["data"]
    assert len(rows) == 2
    for row in rows:
        assert set(row) == {"id", "title", "event"}
        assert row["event"] is not None and row["event"]["id"] == event
        assert row["event"]["name"] == "Event 000"
    searched = await api.client.post(
        "/v3/crud/event_session/search",
        json={"include": ["event"], "fields": ["title"]},
        headers=h,
    )
    assert searched.status_code == 200, searched.text
    assert searched.json()["data"] == rows
    for row in rows:
        one = await api.client.get(f"/v3/crud/event_session/{row['id']}", params=params, headers=h)
        assert one.status_code == 200, one.text
        assert one.json() == row
