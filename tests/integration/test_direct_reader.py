"""The direct reader gives exactly what SQLAlchemy gives, and steps aside when it cannot.

`DirectReader` runs the prebuilt reads on the driver connection with SQLAlchemy's own bind
and result processors; these tests compare it with `conn.execute()` on every object type of
the registry and on every database, and check the ways back to the usual path.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import sqlalchemy as sa

from engine.plans import ACCOUNT_PARAM, ID_PARAM, ancestor_chains
from tests.integration.conftest import Api
from tests.statements import count_statements

EVENT = {
    "name": "Direct",
    "starts_at": "2027-05-01T09:00:00.250000Z",
    "metadata": {"tags": ["a", "ü"], "n": 1},
    "capacity": 12,
}


async def _account_pk(api: Api) -> int:
    account = api.runtime.tables["account"]
    async with api.runtime.reader.connect() as conn:
        stmt = sa.select(account.c.id).where(account.c.id_random == api.a.account_id)
        return int((await conn.execute(stmt)).scalar_one())


async def _sa_rows(api: Api, stmt: sa.Select[Any], params: dict[str, Any]) -> list[tuple[Any, ...]]:
    async with api.runtime.reader.connect() as conn:
        return [tuple(row) for row in (await conn.execute(stmt, params)).all()]


async def test_item_statements_agree_with_sqlalchemy_on_every_type(api: Api) -> None:
    h = api.a.headers()
    r = await api.client.post("/v3/crud/event", json=EVENT, headers=h)
    assert r.status_code == 201, r.text
    rt = api.runtime
    pk = await _account_pk(api)
    taken = 0
    for obj in rt.registry:
        plan = rt.plans[obj.name]
        key = sa.select(plan.table.c.id_random).where(
            plan.table.c.account_id == pk if "account_id" in plan.table.c else sa.true()
        )
        async with rt.reader.connect() as conn:
            ids = [str(v) for v in (await conn.execute(key.limit(3))).scalars()]
        for public_id in ids or ["no-such-id-0000000000"]:
            stmt = plan.item(())
            params = {ID_PARAM: public_id, ACCOUNT_PARAM: pk}
            direct = await rt.direct.rows(stmt, params)
            if direct is None:
                continue  # not taken on this database (the usual path serves it)
            taken += 1
            assert direct == await _sa_rows(api, stmt, params), obj.name
    assert taken > 0


async def test_encoded_columns_encode_exactly_as_sqlalchemy_values_do(api: Api) -> None:
    """Columns asked in JSON form (on MariaDB: datetimes as ISO text, JSON as raw text) give
    the same answer bytes as the usual path, with and without fractions, NULL included."""
    h = api.a.headers()
    bodies = [
        EVENT,
        {**EVENT, "starts_at": "2027-05-01T09:00:00Z", "ends_at": "2027-05-01T10:00:00.000001Z"},
        {**EVENT, "starts_at": "0999-01-02T03:04:05Z", "metadata": {}},
        {"name": "Bare", "starts_at": "2027-05-01T09:00:00.5Z"},
    ]
    for body in bodies:
        assert (await api.client.post("/v3/crud/event", json=body, headers=h)).status_code == 201
    rt = api.runtime
    pk = await _account_pk(api)
    checked = compared = 0
    for obj in rt.registry:
        plan = rt.plans[obj.name]
        key = sa.select(plan.table.c.id_random).where(
            plan.table.c.account_id == pk if "account_id" in plan.table.c else sa.true()
        )
        async with rt.reader.connect() as conn:
            ids = [str(v) for v in (await conn.execute(key.limit(5))).scalars()]
        for public_id in ids:
            stmt = plan.item(())
            params = {ID_PARAM: public_id, ACCOUNT_PARAM: pk}
            direct = await rt.direct.rows(stmt, params, encoded=plan.encoded)
            if direct is None:
                continue
            usual_rows = await _sa_rows(api, stmt, params)
            assert len(direct) == len(usual_rows), obj.name
            if not direct:
                continue  # another account's id (accounts list them all)
            (usual,) = usual_rows
            expected = msgspec.json.encode(plan.public(usual, plan.names, api.a.account_id))
            got = msgspec.json.encode(plan.record(direct[0], plan.names, api.a.account_id))
            assert got == expected, obj.name
            compared += 1
            if obj.name == "event" and rt.dialect == "mysql":  # the JSON form was taken
                starts_at = direct[0][plan.names.index("starts_at")]
                assert isinstance(starts_at, str) and starts_at.endswith("Z")
                checked += 1
    assert compared >= len(bodies)  # every event at least, on every database
    assert checked == (len(bodies) if rt.dialect == "mysql" else 0)
    # The list page (direct) and the same page with a count (the usual path) agree too.
    direct_page = await api.client.get("/v3/crud/event?limit=50&sort=starts_at", headers=h)
    usual_page = await api.client.get(
        "/v3/crud/event?limit=50&sort=starts_at&count=true", headers=h
    )
    assert direct_page.status_code == usual_page.status_code == 200
    assert direct_page.json()["data"] == usual_page.json()["data"]
    assert len(direct_page.json()["data"]) >= len(bodies)
    # Chosen fields, sorted by one of them (read back for the cursor) and walked page by
    # page: the direct pages and the usual ones agree, cursor included.
    query = "/v3/crud/event?limit=2&sort=-starts_at&fields=name,starts_at,ends_at,metadata"
    direct_items, usual_items = [], []
    for extra, items in (("", direct_items), ("&count=true", usual_items)):
        url = query + extra
        while url:
            page = await api.client.get(url, headers=h)
            assert page.status_code == 200, page.text
            items.extend(page.json()["data"])
            cursor = page.json()["next"]
            url = f"{query}{extra}&after={cursor}" if cursor else ""
    assert direct_items == usual_items and len(direct_items) >= len(bodies)


async def test_values_come_back_typed_and_aware(api: Api) -> None:
    h = api.a.headers()
    made = (await api.client.post("/v3/crud/event", json=EVENT, headers=h)).json()
    rt = api.runtime
    plan = rt.plans["event"]
    rows = await rt.direct.rows(
        plan.item(()), {ID_PARAM: made["id"], ACCOUNT_PARAM: await _account_pk(api)}
    )
    assert rows is not None and len(rows) == 1
    item = dict(zip(plan.names, rows[0], strict=False))
    assert item["starts_at"] == dt.datetime(2027, 5, 1, 9, 0, 0, 250000, tzinfo=dt.UTC)
    assert item["starts_at"].tzinfo is dt.UTC
    assert item["metadata"] == {"tags": ["a", "ü"], "n": 1}
    assert item["capacity"] == 12
    got = await api.client.get(f"/v3/crud/event/{made['id']}", headers=h)
    assert got.json() == made


async def test_a_statement_it_cannot_take_is_left_to_sqlalchemy(api: Api) -> None:
    table = api.runtime.tables["event"]
    expanding = sa.select(table.c.id).where(
        table.c.id_random.in_(sa.bindparam("ids", expanding=True))
    )
    assert await api.runtime.direct.rows(expanding, {"ids": ["x"]}) is None
    missing_value = sa.select(table.c.id).where(table.c.id_random == sa.bindparam("absent"))
    assert await api.runtime.direct.rows(missing_value, {}) is None


async def test_observers_of_the_engine_see_direct_statements(api: Api) -> None:
    h = api.a.headers()
    made = (await api.client.post("/v3/crud/event", json=EVENT, headers=h)).json()
    with count_statements(api.runtime) as seen:
        r = await api.client.get(f"/v3/crud/event/{made['id']}", headers=h)
    assert r.status_code == 200
    assert len(seen) == 1 and "event" in seen[0].lower()


async def test_a_dropped_connection_falls_back_and_is_not_reused(api: Api) -> None:
    """The server closes every pooled connection: the next read still answers (the shortcut
    fails, its connection is discarded, the usual path retries on a fresh one)."""
    h = api.a.headers()
    made = (await api.client.post("/v3/crud/event", json=EVENT, headers=h)).json()
    rt = api.runtime
    url = f"/v3/crud/event/{made['id']}"
    assert (await api.client.get(url, headers=h)).status_code == 200
    if rt.dialect == "sqlite":
        await rt.reader.dispose()  # nothing to kill from outside: a closed pool is the case
    else:
        async with rt.engine.connect() as conn:
            await _kill_other_sessions(conn, rt.dialect)
    for _ in range(3):
        r = await api.client.get(url, headers=h)
        assert r.status_code == 200, r.text
        assert r.json() == made
    pages = await api.client.get("/v3/crud/event?sort=-starts_at", headers=h)
    assert pages.status_code == 200 and made["id"] in [e["id"] for e in pages.json()["data"]]


async def _kill_other_sessions(conn: Any, dialect: str) -> None:
    if dialect == "postgresql":
        await conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        return
    me = (await conn.execute(sa.text("SELECT CONNECTION_ID()"))).scalar_one()
    database = (await conn.execute(sa.text("SELECT DATABASE()"))).scalar_one()
    rows = await conn.execute(
        sa.text("SELECT id FROM information_schema.processlist WHERE db = :db AND id <> :me"),
        {"db": database, "me": me},
    )
    for (pid,) in rows.all():
        await conn.execute(sa.text(f"KILL {int(pid)}"))


def test_every_ancestor_chain_has_an_item_statement(api: Api) -> None:
    rt = api.runtime
    for obj in rt.registry:
        for chain in ancestor_chains(obj, rt.registry):
            assert rt.plans[obj.name].item(chain) is rt.plans[obj.name].item(chain)


async def test_searches_of_one_shape_take_their_own_values(api: Api) -> None:
    """Filtered searches share one statement per shape (`filter_shape`): the second search
    of a shape must bind its own values, not the first one's."""
    h = api.a.headers()
    for name, capacity in (("Small", 10), ("Large", 500)):
        body = {**EVENT, "name": name, "capacity": capacity}
        assert (await api.client.post("/v3/crud/event", json=body, headers=h)).status_code == 201
    rt = api.runtime
    pages, prebuilt = len(rt.plans["event"].pages), len(rt.direct._prebuilt)
    for bound, expected in ((100, {"Small"}), (1000, {"Small", "Large"}), (5, set())):
        query = {"filter": {"capacity": {"_lt": bound}, "name": {"_neq": "Direct"}}}
        r = await api.client.post("/v3/crud/event/search", json=query, headers=h)
        assert r.status_code == 200, r.text
        assert {e["name"] for e in r.json()["data"]} == expected, bound
    assert len(rt.plans["event"].pages) == pages + 1
    assert len(rt.direct._prebuilt) == prebuilt + 1
    # An out-of-range bound folds into a constant: another shape, still the right answer.
    query = {"filter": {"capacity": {"_lt": 2**40}, "name": {"_neq": "Direct"}}}
    r = await api.client.post("/v3/crud/event/search", json=query, headers=h)
    assert r.status_code == 200, r.text
    assert {e["name"] for e in r.json()["data"]} == {"Small", "Large"}
