"""Tenant isolation under random sequences of requests (SPEC 4, 5; RELIABILITY S1, S6).

A hypothesis state machine drives one app (SQLite, to keep it fast) with two fresh tenants
per example and every role of each, by API key and by JWT. It creates, reads, lists,
searches, patches and deletes events and their sessions, keeping a model
{account: {public_id: object}}, and checks that no principal ever sees another account's
object (by status, row or total), that reads match the model, and that roles lacking the
right always get 403.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from engine.app import create_app
from engine.db import create_engine
from engine.provisioning import insert_account, insert_api_key
from engine.runtime import Runtime
from tests.integration.conftest import Tenant, make_settings

ROLES = ("viewer", "editor", "admin", "owner")
WRITE_ROLE = "editor"
SESSION = "event_session"
MACHINE_SETTINGS = settings(
    max_examples=15,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class World:
    """One app, client and event loop shared by every example (each gets new tenants)."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        url = f"sqlite+aiosqlite:///{tmp_path / 'stateful.db'}"
        self.run(self._create_schema(url, tmp_path))
        self.app = create_app(make_settings(url, tmp_path))
        self.runtime: Runtime = self.app.state.runtime
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://aether.test"
        )

    async def _create_schema(self, url: str, tmp_path: Path) -> None:
        from models.base import Base

        engine = create_engine(make_settings(url, tmp_path))
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await engine.dispose()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            self.run(self.client.aclose())
            self.run(self.runtime.close())
        finally:
            self.loop.close()


class Principal:
    def __init__(self, tenant: Tenant, role: str, headers: dict[str, str], how: str) -> None:
        self.tenant, self.role, self.headers, self.how = tenant, role, headers, how

    @property
    def account(self) -> str:
        return self.tenant.account_id

    @property
    def can_write(self) -> bool:
        return ROLES.index(self.role) >= ROLES.index(WRITE_ROLE)

    def __repr__(self) -> str:
        return f"<{self.tenant.slug} {self.role} by {self.how}>"


def build_machine(world: World) -> type[RuleBasedStateMachine]:
    class IsolationMachine(RuleBasedStateMachine):
        events = Bundle("events")
        sessions = Bundle("sessions")

        def __init__(self) -> None:
            super().__init__()
            self.tenants = world.run(self._tenants())
            self.principals: list[Principal] = []
            for tenant in self.tenants:
                for role in ROLES:
                    self.principals.append(Principal(tenant, role, tenant.headers(role), "key"))
                    token = world.runtime.jwt.issue(
                        sub=f"user-{role}", acct=tenant.account_id, role=role, ttl_seconds=600
                    )
                    bearer = {"Authorization": f"Bearer {token}"}
                    self.principals.append(Principal(tenant, role, bearer, "jwt"))
            #: The model: account public id -> {public id -> object as last written}.
            self.model: dict[str, dict[str, dict[str, Any]]] = {
                t.account_id: {} for t in self.tenants
            }

        async def _tenants(self) -> list[Tenant]:
            """Two new accounts with a key per role (no password: no argon2 per example)."""
            rt = world.runtime
            tenants = []
            async with rt.engine.begin() as conn:
                for _ in range(2):
                    slug = "t" + secrets.token_hex(6)
                    made = await insert_account(
                        conn, rt.tables, name=slug, slug=slug, owner_email=f"o@{slug}.test"
                    )
                    tenant = Tenant(slug, made.account_id, {"owner": made.api_key})
                    for role in ROLES[:-1]:
                        key = await insert_api_key(
                            conn, rt.tables, account_id=made.pk, name=role, role=role
                        )
                        tenant.keys[role] = key.key
                    tenants.append(tenant)
            return tenants

        def call(self, method: str, path: str, who: Principal, body: Any = None) -> httpx.Response:
            return world.run(world.client.request(method, path, json=body, headers=who.headers))  # type: ignore[no-any-return]

        def owner_of(self, public_id: str) -> str | None:
            for account, objects in self.model.items():
                if public_id in objects:
                    return account
            return None

        def mine(self, who: Principal, public_id: str, kind: str) -> dict[str, Any] | None:
            obj = self.model[who.account].get(public_id)
            return obj if obj is not None and obj["_type"] == kind else None

        def principal(self, data: st.DataObject) -> Principal:
            return data.draw(st.sampled_from(self.principals), label="principal")

        # -- rules ------------------------------------------------------------------------

        @rule(target=events, data=st.data(), name=st.text("abcxyz ", min_size=1, max_size=12))
        def create_event(self, data: st.DataObject, name: str) -> Any:
            who = self.principal(data)
            body = {"name": name, "starts_at": "2027-03-14T09:00:00Z"}
            r = self.call("POST", "/v3/crud/event", who, body)
            if not who.can_write:
                assert r.status_code == 403, (who, r.text)
                return multiple()
            assert r.status_code == 201, (who, r.text)
            made = r.json()
            assert made["account_id"] == who.account and made["name"] == name
            self.model[who.account][made["id"]] = {**made, "_type": "event"}
            return made["id"]

        @rule(target=sessions, data=st.data(), event=events, nested=st.booleans())
        def create_session(self, data: st.DataObject, event: str, nested: bool) -> Any:
            who = self.principal(data)
            body: dict[str, Any] = {"title": "Talk", "starts_at": "2027-03-14T10:00:00Z"}
            if nested:
                path = f"/v3/crud/event/{event}/{SESSION}"
            else:
                path, body = f"/v3/crud/{SESSION}", {**body, "event_id": event}
            r = self.call("POST", path, who, body)
            if not who.can_write:
                assert r.status_code == 403, (who, r.text)
                return multiple()
            if self.mine(who, event, "event") is None:
                # Another account's (or a deleted) parent: 404 by path, 422 by reference.
                assert r.status_code == (404 if nested else 422), (who, r.text)
                return multiple()
            assert r.status_code == 201, (who, r.text)
            made = r.json()
            assert made["event_id"] == event
            self.model[who.account][made["id"]] = {**made, "_type": SESSION}
            return made["id"]

        @rule(data=st.data(), target_id=st.one_of(events, sessions))
        def read(self, data: st.DataObject, target_id: str) -> None:
            who = self.principal(data)
            owner = self.owner_of(target_id)
            kind = self.model[owner][target_id]["_type"] if owner else None
            for kind_tried in ("event", SESSION):
                r = self.call("GET", f"/v3/crud/{kind_tried}/{target_id}", who)
                expected = self.mine(who, target_id, kind_tried)
                if expected is None:
                    assert r.status_code == 404, (who, target_id, kind, r.text)
                else:
                    assert r.status_code == 200, (who, r.text)
                    assert r.json() == {k: v for k, v in expected.items() if k != "_type"}

        @rule(data=st.data(), session=sessions, event=events)
        def read_nested(self, data: st.DataObject, session: str, event: str) -> None:
            who = self.principal(data)
            r = self.call("GET", f"/v3/crud/event/{event}/{SESSION}/{session}", who)
            found = self.mine(who, session, SESSION)
            if found is not None and found["event_id"] == event:
                assert r.status_code == 200, (who, r.text)
            else:
                assert r.status_code == 404, (who, r.text)

        @rule(data=st.data(), kind=st.sampled_from(("event", SESSION)), by_search=st.booleans())
        def list_all(self, data: st.DataObject, kind: str, by_search: bool) -> None:
            who = self.principal(data)
            if by_search:
                r = self.call("POST", f"/v3/crud/{kind}/search", who, {"count": True, "limit": 500})
            else:
                r = self.call("GET", f"/v3/crud/{kind}?count=true&limit=500", who)
            assert r.status_code == 200, (who, r.text)
            expected = {i for i, o in self.model[who.account].items() if o["_type"] == kind}
            got = r.json()
            assert {row["id"] for row in got["data"]} == expected, who
            assert got["total"] == len(expected)

        @rule(data=st.data(), target_id=st.one_of(events, sessions), in_list=st.booleans())
        def search_by_id(self, data: st.DataObject, target_id: str, in_list: bool) -> None:
            who = self.principal(data)
            filt = {"id": {"_in": [target_id]}} if in_list else {"id": target_id}
            for kind in ("event", SESSION):
                body = {"filter": filt, "count": True}
                r = self.call("POST", f"/v3/crud/{kind}/search", who, body)
                assert r.status_code == 200, r.text
                n = 1 if self.mine(who, target_id, kind) else 0
                assert r.json()["total"] == n and len(r.json()["data"]) == n, (who, filt)

        @rule(data=st.data(), event=events)
        def sessions_of_event(self, data: st.DataObject, event: str) -> None:
            who = self.principal(data)
            mine = self.model[who.account]
            expected = {
                i for i, o in mine.items() if o["_type"] == SESSION and o["event_id"] == event
            }
            body = {"filter": {"event_id": event}, "count": True, "limit": 500}
            r = self.call("POST", f"/v3/crud/{SESSION}/search", who, body)
            assert {row["id"] for row in r.json()["data"]} == expected
            assert r.json()["total"] == len(expected)
            body = {"filter": {"event": {"id": event}}, "count": True}
            r = self.call("POST", f"/v3/crud/{SESSION}/search", who, body)
            assert r.json()["total"] == len(expected)
            body = {"filter": {SESSION: {"_some": {}}}, "include": [SESSION], "limit": 500}
            r = self.call("POST", "/v3/crud/event/search", who, body)
            for row in r.json()["data"]:
                assert row["id"] in mine
                assert all(s["id"] in mine for s in row[SESSION])

        @rule(
            data=st.data(),
            target_id=st.one_of(events, sessions),
            text=st.text("pqr", min_size=1, max_size=8),
        )
        def patch(self, data: st.DataObject, target_id: str, text: str) -> None:
            who = self.principal(data)
            owner = self.owner_of(target_id)
            kind = self.model[owner][target_id]["_type"] if owner else "event"
            field = "name" if kind == "event" else "title"
            r = self.call("PATCH", f"/v3/crud/{kind}/{target_id}", who, {field: text})
            if not who.can_write:
                assert r.status_code == 403, (who, r.text)
                return
            current = self.mine(who, target_id, kind)
            if current is None:
                assert r.status_code == 404, (who, r.text)
                return
            assert r.status_code == 200, (who, r.text)
            assert r.json()[field] == text and r.json()["version"] == current["version"] + 1
            self.model[who.account][target_id] = {**r.json(), "_type": kind}

        @rule(data=st.data(), target_id=st.one_of(events, sessions))
        def delete(self, data: st.DataObject, target_id: str) -> None:
            who = self.principal(data)
            owner = self.owner_of(target_id)
            kind = self.model[owner][target_id]["_type"] if owner else "event"
            r = self.call("DELETE", f"/v3/crud/{kind}/{target_id}", who)
            if not who.can_write:
                assert r.status_code == 403, (who, r.text)
                return
            if self.mine(who, target_id, kind) is None:
                assert r.status_code == 404, (who, r.text)
                return
            assert r.status_code == 204, (who, r.text)
            mine = self.model[who.account]
            del mine[target_id]
            if kind == "event":  # sessions cascade with their event
                for sid in [i for i, o in mine.items() if o.get("event_id") == target_id]:
                    del mine[sid]

        # -- invariants ---------------------------------------------------------------------

        @invariant()
        def each_account_sees_exactly_its_events(self) -> None:
            for tenant in self.tenants:
                viewer = next(p for p in self.principals if p.tenant is tenant)
                r = self.call("GET", "/v3/crud/event?count=true&limit=500&fields=id", viewer)
                expected = {
                    i for i, o in self.model[tenant.account_id].items() if o["_type"] == "event"
                }
                assert {row["id"] for row in r.json()["data"]} == expected
                assert r.json()["total"] == len(expected)

    return IsolationMachine


def test_isolation_state_machine(tmp_path: Path) -> None:
    world = World(tmp_path)
    try:
        run_state_machine_as_test(build_machine(world), settings=MACHINE_SETTINGS)
    finally:
        world.close()
