"""A model added through AE_MODEL_MODULES alone gets CRUD, nesting, schema and search (SPEC 3).

Declaring a model changes the shared SQLAlchemy metadata of the process that imports it,
so each case runs in a fresh interpreter: the test writes the model module and a driver
script into tmp_path, runs it, and asserts on the JSON summary the script prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

SPONSOR_MODULE = '''
"""A sponsor of an event: the model a developer adds with no other code."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, PublicIdMixin, TenantMixin, TimestampMixin


class Sponsor(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "sponsor"

    event_id: Mapped[int] = mapped_column(
        BigIntKey,
        ForeignKey("event.id", ondelete="CASCADE"),
        nullable=False,
        info={"parent": True},
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    tier: Mapped[str | None] = mapped_column(String(16), info={"enum": ["gold", "silver"]})
    amount: Mapped[int | None] = mapped_column(Integer, info={"minimum": 0})
'''

CORE_SPONSOR_MODULE = '''
"""The same sponsor built with the Core API: a `Table`, copied columns, mapped imperatively."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, String, Table

from models.base import Base, BigIntKey, ModelOptions
from models.events import Event

sponsor = Table(
    "sponsor",
    Base.metadata,
    *(Event.__table__.c[name]._copy() for name in ("id", "id_random", "account_id")),
    Column("event_id", BigIntKey, ForeignKey("event.id", ondelete="CASCADE"), nullable=False,
           info={"parent": True}),
    Column("name", String(100), nullable=False),
    Column("tier", String(16), info={"enum": ["gold", "silver"]}),
    Column("amount", Integer, info={"minimum": 0}),
    *(Event.__table__.c[name]._copy() for name in ("created_at", "updated_at", "version")),
)


class Sponsor:
    __aether__ = ModelOptions()


Base.registry.map_imperatively(Sponsor, sponsor)
'''

DRIVER = """
import asyncio
import json

import httpx
import sqlalchemy as sa

from engine.app import create_app
from engine.provisioning import insert_account
from engine.settings import load_settings


async def main() -> None:
    settings = load_settings(dotenv=None)
    app = create_app(settings)
    from models.base import Base

    sync = sa.create_engine(settings.database_url.replace("+aiosqlite", ""))
    Base.metadata.create_all(sync)
    sync.dispose()
    rt = app.state.runtime
    async with rt.engine.begin() as conn:
        made = await insert_account(
            conn, rt.tables, name="Tee", slug="tee", owner_email="o@tee.test"
        )
    h = {"X-API-Key": made.api_key}
    out = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        ev = (await c.post("/v3/crud/event", json={"name": "Gala",
              "starts_at": "2027-03-14T09:00:00Z"}, headers=h)).json()
        r = await c.post(f"/v3/crud/event/{ev['id']}/sponsor",
                         json={"name": "Acme", "tier": "gold", "amount": 500}, headers=h)
        out["create"] = [r.status_code, r.json(), r.headers.get("location")]
        sp = r.json()
        nested = await c.get(f"/v3/crud/event/{ev['id']}/sponsor/{sp['id']}", headers=h)
        flat = await c.get(f"/v3/crud/sponsor/{sp['id']}", headers=h)
        deep = await c.get(
            f"/v3/crud/account/{made.account_id}/event/{ev['id']}/sponsor", headers=h
        )
        out["nested"] = [nested.status_code, nested.json()]
        out["flat"] = [flat.status_code, flat.json()]
        out["deep_list"] = [deep.status_code, deep.json()]
        listed = await c.get("/v3/crud/sponsor", headers=h)
        out["list"] = [listed.status_code, listed.json()]
        bad = await c.post(f"/v3/crud/event/{ev['id']}/sponsor",
                           json={"name": "Cheap", "tier": "bronze", "amount": -1}, headers=h)
        out["bad"] = [bad.status_code, bad.json()]
        schema = await c.get("/v3/crud/sponsor/schema", headers=h)
        out["schema"] = [schema.status_code, schema.json()]
        index = await c.get("/v3/crud/schema", headers=h)
        out["schema_index"] = [index.status_code, index.json()]
        found = await c.post("/v3/crud/sponsor/search",
                             json={"filter": {"tier": "gold", "amount": {"_gte": 100}}},
                             headers=h)
        out["search"] = [found.status_code, found.json()]
        by_child = await c.post(
            "/v3/crud/event/search",
            json={"filter": {"sponsor": {"_some": {"name": "Acme"}}}, "include": ["sponsor"]},
            headers=h,
        )
        out["event_search"] = [by_child.status_code, by_child.json()]
        spec = (await c.get("/openapi.json")).json()
        out["openapi_paths"] = sorted(p for p in spec["paths"] if "sponsor" in p)
        gone = await c.delete(f"/v3/crud/event/{ev['id']}", headers=h)
        after = await c.get(f"/v3/crud/sponsor/{sp['id']}", headers=h)
        out["cascade"] = [gone.status_code, after.status_code]
    await rt.close()
    print(json.dumps(out))


asyncio.run(main())
"""

REFUSING_DRIVER = """
import json

from engine.app import create_app
from engine.settings import load_settings
from registry import RegistryError

try:
    create_app(load_settings(dotenv=None))
except RegistryError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"error": None}))
"""

SEARCH_MODULE = """
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, PublicIdMixin, TenantMixin, TimestampMixin


class Search(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "search"
    name: Mapped[str] = mapped_column(String(10))
"""

NO_PUBLIC_ID_MODULE = """
from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TenantMixin, TimestampMixin


class Gadget(TenantMixin, TimestampMixin, Base):
    __tablename__ = "gadget"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, info={"hidden": True})
    name: Mapped[str] = mapped_column(String(10))
"""


def run_driver(
    tmp_path: Path, module: str, driver: str, name: str = "extra_models"
) -> dict[str, Any]:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(module))
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(driver))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AE_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
        AE_ENV="test",
        AE_MODEL_MODULES=f"models,{name}",
        AE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'aether.db'}",
        AE_BLOB_DIR=str(tmp_path / "blobs"),
        AE_LOG_LEVEL="WARNING",
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, (done.stdout[-2000:], done.stderr[-2000:])
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_a_new_model_module_gets_working_crud(tmp_path: Path) -> None:
    check_sponsor_served(run_driver(tmp_path, SPONSOR_MODULE, DRIVER, name="sponsor_models"))


def test_a_model_built_with_core_columns_is_served(tmp_path: Path) -> None:
    """SQLAlchemy names Core tables and columns with `quoted_name`, which msgspec refuses."""
    check_sponsor_served(run_driver(tmp_path, CORE_SPONSOR_MODULE, DRIVER, name="core_sponsor"))


def check_sponsor_served(out: dict[str, Any]) -> None:
    status, sponsor, location = out["create"]
    assert status == 201, sponsor
    assert sponsor["name"] == "Acme" and sponsor["tier"] == "gold" and sponsor["amount"] == 500
    assert location.endswith(f"/sponsor/{sponsor['id']}")
    assert out["nested"] == [200, sponsor]
    assert out["flat"] == [200, sponsor]
    assert out["deep_list"][0] == 200 and out["deep_list"][1]["data"] == [sponsor]
    assert out["list"][0] == 200 and out["list"][1]["data"] == [sponsor]

    status, problem = out["bad"]
    assert status == 422, problem
    assert {e["path"] for e in problem["errors"]} == {"tier", "amount"}

    status, schema = out["schema"]
    assert status == 200
    assert schema["x-aether"]["parent"] == {"type": "event", "field": "event_id"}
    assert schema["properties"]["tier"]["enum"] == ["gold", "silver", None]
    assert schema["properties"]["amount"]["minimum"] == 0
    assert schema["$defs"]["create"]["required"] == ["event_id", "name"]
    status, index = out["schema_index"]
    assert status == 200, index
    assert "sponsor" in json.dumps(index)

    assert out["search"][0] == 200 and out["search"][1]["data"] == [sponsor]
    status, events = out["event_search"]
    assert status == 200, events
    assert [e["sponsor"] for e in events["data"]] == [[sponsor]]
    assert "/v3/crud/event/{event_id}/sponsor/{id}" in out["openapi_paths"]
    assert "/v3/crud/sponsor/search" in out["openapi_paths"]
    assert out["cascade"] == [204, 404]


def test_a_model_named_search_is_refused_by_name(tmp_path: Path) -> None:
    error = run_driver(tmp_path, SEARCH_MODULE, REFUSING_DRIVER)["error"]
    assert error is not None and "'search'" in error and "reserved" in error


def test_a_model_without_id_random_is_refused_by_name(tmp_path: Path) -> None:
    error = run_driver(tmp_path, NO_PUBLIC_ID_MODULE, REFUSING_DRIVER)["error"]
    assert error is not None and "'gadget'" in error and "id_random" in error
