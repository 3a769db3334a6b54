"""A database behind the models answers one clear 503, whoever asks (SPEC 8, 9).

Never migrated: an API key and a JWT both get "not migrated: run `aether migrate`", as does
`/readyz`. At the latest revision but missing a table the models have: the same, and
`/readyz` notices it too. Start-up says so in the log.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from engine import migrate
from engine.app import create_app
from engine.auth.api_keys import generate_api_key
from engine.errors import NOT_MIGRATED
from engine.provisioning import insert_account
from engine.runtime import Runtime
from tests.integration.conftest import make_settings


@pytest.fixture
async def app(empty_database_url: str, tmp_path: Path) -> AsyncIterator[Starlette]:
    app = create_app(make_settings(empty_database_url, tmp_path))
    yield app
    await app.state.runtime.close()


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def assert_not_migrated(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == NOT_MIGRATED
    assert response.headers["retry-after"]


async def test_never_migrated_answers_the_same_to_every_caller(app: Starlette) -> None:
    rt: Runtime = app.state.runtime
    token = rt.jwt.issue(sub="A" * 22, acct="B" * 22, role="owner", ttl_seconds=60)
    async with client(app) as c:
        by_jwt = await c.get("/v3/crud/event", headers={"Authorization": f"Bearer {token}"})
        by_key = await c.get("/v3/crud/event", headers={"X-API-Key": generate_api_key().key})
        ready = await c.get("/readyz")
    assert_not_migrated(by_jwt)
    assert_not_migrated(by_key)
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["database"] == NOT_MIGRATED


async def test_a_table_missing_at_the_latest_revision(app: Starlette) -> None:
    rt: Runtime = app.state.runtime
    await migrate.upgrade(rt.settings)
    async with rt.engine.begin() as conn:
        made = await insert_account(
            conn,
            rt.tables,
            name="Alpha",
            slug="alpha",
            owner_email="owner@alpha.test",
            owner_password="correct horse battery",
        )
    headers = {"X-API-Key": made.api_key}
    async with client(app) as c:
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/v3/crud/event_file", headers=headers)).status_code == 200
        async with rt.engine.begin() as conn:
            await conn.execute(sa.text("DROP TABLE event_file"))
        assert_not_migrated(await c.get("/v3/crud/event_file", headers=headers))
        ready = await c.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["database"] == NOT_MIGRATED
        assert (await c.get("/v3/crud/event", headers=headers)).status_code == 200


async def test_start_up_warns_when_not_migrated(
    app: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.health"):
        async with app.router.lifespan_context(app):
            pass
    assert any(NOT_MIGRATED in r.getMessage() for r in caplog.records), caplog.text


async def test_start_up_leaves_its_objects_out_of_full_collections(app: Starlette) -> None:
    """What start-up built is frozen (`gc.freeze`): full collections under load walk only
    what requests made, not the worker's permanent heap."""
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
