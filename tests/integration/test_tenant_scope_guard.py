"""The guard every integration test runs under: it sees the app's statements, and only those.

See `tenant_scope_guard` in conftest.py; the checker itself is tested in
tests/unit/test_tenant_scope.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa

from tests.integration.conftest import Api, scope_violations


async def test_the_statements_of_a_request_are_recorded_on_every_backend(
    api: Api, tenant_scope_guard: list[tuple[str, str]]
) -> None:
    seen = tenant_scope_guard
    seen.clear()
    made = await api.client.post(
        "/v3/crud/event",
        json={"code": "G-1", "name": "Guarded", "starts_at": "2027-03-14T09:00:00Z"},
        headers=api.a.headers(),
    )
    assert made.status_code == 201, made.text
    listed = await api.client.get("/v3/crud/event", headers=api.a.headers())
    assert listed.status_code == 200
    texts = [sql.lower() for _, sql in seen]
    assert any(t.lstrip().startswith("insert") and "event" in t for t in texts), texts
    assert any(t.lstrip().startswith("select") and "event.account_id" in t for t in texts)
    assert scope_violations(seen) == []


async def test_what_a_test_sends_itself_is_not_recorded(
    api: Api, tenant_scope_guard: list[tuple[str, str]]
) -> None:
    seen = tenant_scope_guard
    seen.clear()
    event = api.runtime.tables["event"]
    for engine in api.runtime.engines:
        async with engine.connect() as conn:
            await conn.execute(sa.select(event.c.id))
    assert seen == []


async def test_an_unscoped_statement_in_a_request_is_reported(
    api: Api, tenant_scope_guard: list[tuple[str, str]]
) -> None:
    """An app that reads and deletes by internal key alone, on both engines, is caught."""
    rt = api.runtime
    event = rt.tables["event"]

    async def leaky(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async with rt.reader.connect() as conn:
            await conn.execute(sa.select(event.c.name).where(event.c.id == 1))
        async with rt.engine.begin() as conn:
            await conn.execute(event.delete().where(event.c.id == 1))
            await conn.execute(event.delete().where(event.c.account_id == 1, event.c.id == 1))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    seen = tenant_scope_guard
    seen.clear()
    transport = httpx.ASGITransport(app=leaky)
    async with httpx.AsyncClient(transport=transport, base_url="http://leaky.test") as client:
        assert (await client.get("/")).status_code == 204
    problems = scope_violations(seen)
    assert len(problems) == 2, problems
    assert "SELECT" in problems[0] and "DELETE" in problems[1]
    seen.clear()  # reported here; the guard's own teardown has nothing left to fail on
