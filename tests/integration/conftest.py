"""Integration fixtures: an app on a fresh database per backend, with two tenants and keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from engine.app import create_app
from engine.provisioning import insert_account, insert_api_key
from engine.runtime import Runtime
from engine.settings import RateLimit, Settings


@dataclass
class Tenant:
    slug: str
    account_id: str
    keys: dict[str, str] = field(default_factory=dict)

    def headers(self, role: str = "owner") -> dict[str, str]:
        return {"X-API-Key": self.keys[role]}


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    a: Tenant
    b: Tenant
    system_key: str


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "database_url": database_url,
        "blob_dir": str(tmp_path / "blobs"),
        "rate_limit": RateLimit(100_000, 60),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def make_tenant(rt: Runtime, slug: str) -> Tenant:
    async with rt.engine.begin() as conn:
        made = await insert_account(
            conn,
            rt.tables,
            name=f"Tenant {slug}",
            slug=slug,
            owner_email=f"owner@{slug}.test",
            owner_password="correct horse battery",
        )
        tenant = Tenant(slug=slug, account_id=made.account_id, keys={"owner": made.api_key})
        for role in ("viewer", "editor", "admin"):
            key = await insert_api_key(
                conn, rt.tables, account_id=made.pk, name=f"{role} key", role=role
            )
            tenant.keys[role] = key.key
    return tenant


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = make_settings(database_url, tmp_path)
    app = create_app(settings)
    rt: Runtime = app.state.runtime
    a = await make_tenant(rt, "alpha")
    b = await make_tenant(rt, "beta")
    async with rt.engine.begin() as conn:
        system = await insert_api_key(conn, rt.tables, account_id=None, name="sys", role="system")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://aether.test") as client:
        yield Api(client=client, runtime=rt, a=a, b=b, system_key=system.key)
    await rt.close()
