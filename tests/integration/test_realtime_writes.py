"""What the write paths publish to the change feed, on every database (SPEC 6.5).

The app here has no Redis, so its feed is the in-process `MemoryFeed`; what it holds after
each request is what subscribers of the account would be offered.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

import engine.actions.upload as upload_module
from engine.realtime.feed import MemoryFeed
from tests.integration.conftest import Api
from tests.integration.test_actions import PDF, PNG, make_event, upload


def feed_of(api: Api) -> MemoryFeed:
    feed = api.app.state.realtime.feed
    assert isinstance(feed, MemoryFeed)
    return feed


@pytest.fixture(autouse=True)
async def followed(api: Api) -> None:
    """Both accounts are followed, as by a subscriber: the memory feed keeps no log of an
    account nobody asked about."""
    for account in (api.a.account_id, api.b.account_id):
        await feed_of(api).position(account)


def published(api: Api, account: str) -> list[tuple[str, str, str]]:
    log = feed_of(api)._logs.get(account)
    entries = [] if log is None else list(log.entries)
    return [(e.change.op, e.change.object, e.change.id) for e in entries if e.change]


def states(api: Api, account: str) -> list[dict[str, Any]]:
    log = feed_of(api)._logs.get(account)
    return [e.state for e in (log.entries if log else ()) if e.change]


async def test_crud_writes_publish_after_commit_and_cascades_publish_each_object(api: Api):
    account = api.a.account_id
    event = await make_event(api)
    h = api.a.headers()
    r = await api.client.post(
        f"/v3/crud/event/{event['id']}/event_session",
        json={"title": "Keynote", "starts_at": "2027-03-14T10:00:00Z"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    session = r.json()
    r = await api.client.patch(f"/v3/crud/event/{event['id']}", json={"venue": "Hall"}, headers=h)
    assert r.status_code == 200
    updated = r.json()
    # Refused writes publish nothing.
    bad = await api.client.patch(
        f"/v3/crud/event/{event['id']}", json={"venue": "X"}, headers={**h, "If-Match": '"1"'}
    )
    assert bad.status_code == 412
    dup = await api.client.post(
        "/v3/crud/event", json={**event_body(), "code": "GALA-1"}, headers=h
    )
    assert dup.status_code == 409
    assert (await api.client.delete(f"/v3/crud/event/{event['id']}", headers=h)).status_code == 204
    assert published(api, account) == [
        ("create", "event", event["id"]),
        ("create", "event_session", session["id"]),
        ("update", "event", event["id"]),
        ("delete", "event_session", session["id"]),
        ("delete", "event", event["id"]),
    ]
    created, _, changed, *_ = states(api, account)
    assert created == event and changed == updated
    assert published(api, api.b.account_id) == []


def event_body() -> dict[str, Any]:
    return {"name": "Other", "starts_at": "2027-03-14T09:00:00Z"}


async def test_write_only_and_hidden_fields_never_reach_the_feed(api: Api):
    r = await api.client.post(
        "/v3/crud/user",
        json={"email": "new@alpha.test", "password": "a long enough password", "role": "viewer"},
        headers=api.a.headers(),
    )
    assert r.status_code == 201, r.text
    r = await api.client.post(
        "/v3/action/api_key", json={"name": "ci", "role": "viewer"}, headers=api.a.headers()
    )
    assert r.status_code == 201, r.text
    key = r.json()
    user_state, key_state = states(api, api.a.account_id)
    assert "password" not in user_state and "password_hash" not in user_state
    assert "key" not in key_state and "secret_hash" not in key_state
    assert key_state == {k: v for k, v in key.items() if k != "key"}


async def test_an_upload_publishes_its_rows_and_a_failed_one_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = api.a.account_id
    event = await make_event(api)
    r = await upload(api, event["id"], [("file", ("a.pdf", PDF, "application/pdf"))])
    assert r.status_code == 201, r.text
    body = r.json()
    assert published(api, account)[1:] == [
        ("create", "file", body["files"][0]["id"]),
        ("create", "event_file", body["event_files"][0]["id"]),
    ]
    # The same bytes again: the file exists, only the new event_file is created.
    r = await upload(api, event["id"], [("file", ("again.pdf", PDF, "application/pdf"))])
    assert r.status_code == 201, r.text
    assert published(api, account)[3:] == [
        ("create", "event_file", r.json()["event_files"][0]["id"])
    ]
    before = published(api, account)

    real = upload_module.insert_event_files

    async def write_then_fail(*args: Any, **kwargs: Any) -> list[int]:
        await real(*args, **kwargs)  # the rows are written inside the transaction...
        lost = Exception("connection lost")  # ...which then fails
        raise sa_exc.OperationalError("INSERT", {}, lost, connection_invalidated=True)

    monkeypatch.setattr(upload_module, "insert_event_files", write_then_fail)
    r = await upload(api, event["id"], [("file", ("b.png", PNG, "image/png"))])
    assert r.status_code == 503, r.text
    assert published(api, account) == before
