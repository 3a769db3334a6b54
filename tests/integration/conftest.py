"""Integration fixtures: an app on a fresh database per backend, with two tenants and keys.

The app caches in process memory; a module that overrides `cache_backend` with
`params=["memory", "redis"]` runs its tests on a Redis-backed app as well (a namespace of
its own per test, removed afterwards); "redis-cluster" and "redis-sentinel" use the private
Cluster and Sentinel the tests start (`tests/redis_servers.py`).
"""

from __future__ import annotations

import contextvars
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import jsonschema
import pytest
import sqlalchemy as sa

from engine.app import create_app
from engine.cache import CacheBackend, RedisCache
from engine.errors import AetherError
from engine.paths import parse_crud_path
from engine.provisioning import insert_account, insert_api_key
from engine.runtime import Runtime, build_runtime
from engine.settings import RateLimit, Settings
from models.base import Base
from registry.jsonschema import type_schema
from tests.backends import check_redis, drop_redis_namespace, redis_url, unavailable
from tests.redis_servers import RedisDeployment
from tests.tenant_scope import Checker


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
    app: Any = None  # the ASGI app, for a second client (another address, say)


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "database_url": database_url,
        "blob_dir": str(tmp_path / "blobs"),
        "rate_limit": RateLimit(100_000, 60),
        "login_rate_limit": RateLimit(100_000, 60),
        "login_address_rate_limit": RateLimit(100_000, 60),
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


class ResponseSchemaCheck:
    """Every object the API returns in the integration suite must match its type's schema.

    An httpx response hook: CRUD items, list and search pages (without `fields` or
    `include`, which change the shape by design) and upload results are validated against
    the per-type JSON Schema the API publishes at `/v3/crud/{type}/schema`.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.validators: dict[str, jsonschema.Draft202012Validator] = {}

    def validator(self, name: str) -> jsonschema.Draft202012Validator:
        if name not in self.validators:
            doc = type_schema(self.runtime.registry[name], self.runtime.registry)
            self.validators[name] = jsonschema.Draft202012Validator(
                doc, format_checker=jsonschema.FormatChecker()
            )
        return self.validators[name]

    def check(self, name: str, obj: Any) -> None:
        errors = sorted(self.validator(name).iter_errors(obj), key=str)
        assert not errors, f"{name} response breaks its schema: {errors[0].message} in {obj}"

    async def __call__(self, response: httpx.Response) -> None:
        if response.status_code not in (200, 201) or "json" not in response.headers.get(
            "content-type", ""
        ):
            return
        await response.aread()
        request = response.request
        path = request.url.path
        if "fields" in request.url.params or "include" in request.url.params:
            return
        body = response.json()
        if path.startswith("/v3/action/event/") and path.endswith("/upload"):
            for item in body["files"]:
                self.check("file", item)
            for item in body["event_files"]:
                self.check("event_file", item)
            return
        if not path.startswith("/v3/crud/"):
            return
        try:
            target = parse_crud_path(
                [unquote(p) for p in path.removeprefix("/v3/crud/").split("/")],
                self.runtime.registry,
            )
        except AetherError:
            return
        if target.obj is None or target.target in ("schema", "index"):
            return
        if target.target == "search":
            sent = json.loads(request.content or b"{}")
            if not isinstance(sent, dict) or sent.get("fields") or sent.get("include"):
                return
        if target.target == "item" or (request.method == "POST" and target.target == "collection"):
            self.check(target.obj.name, body)
        else:
            for item in body["data"]:
                self.check(target.obj.name, item)


# -- every statement sent while serving a request keeps to one account -------------------
#
# A listener on every SQLAlchemy engine (so on both engines of every Runtime a test builds)
# records the statements sent while the app handles a request: the httpx ASGI transport,
# which every integration test talks to the app through, runs the app inside a context that
# turns the recording on. What the fixtures and tests send themselves is not recorded. At
# teardown each recorded statement is checked (tests/tenant_scope.py) and the test fails on
# a read, update or delete of a tenant table that is not constrained to an account.

_statements: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "statements_in_request", default=None
)

# Statements that reach across accounts on purpose. Each is matched by a fragment of its
# SQL text (lower-cased, quotes dropped, whitespace collapsed) and may leave only the named
# tables unscoped. Anything else the guard reports is a defect in the engine.
SCOPE_ALLOWED: list[tuple[str, frozenset[str], str]] = [
    (
        "from api_key left outer join account on account.id = api_key.account_id"
        " where api_key.prefix =",
        frozenset({"api_key", "account"}),
        "authentication by API key: the key (found by its prefix) is what names the account",
    ),
    (
        "from account left outer join user on user.account_id = account.id and user.id_random =",
        frozenset({"account", "user"}),
        "authentication by token: the verified token names the account (by its public id);"
        " the user is joined inside that account",
    ),
    (
        "join account on account.id = user.account_id where account.slug =",
        frozenset({"user", "account"}),
        "login: the account is named by its slug in the request; the user is joined inside it",
    ),
    (
        "select account.id from account where account.id_random =",
        frozenset({"account"}),
        "a system key acting in the account named at the root of the path"
        " (engine/scoping.py; a tenant is scoped to its own account without a query)",
    ),
    (
        "select distinct file.sha256 from file where file.sha256 in",
        frozenset({"file"}),
        "before deleting a blob a failed upload created: blobs are shared by content across"
        " accounts, so any account's row keeps it (hashes only, nothing reaches the client)",
    ),
]


def _record_statement(conn: sa.Connection, cursor: Any, statement: str, *args: Any) -> None:
    seen = _statements.get()
    if seen is not None:
        seen.append((conn.dialect.name, statement))


_checkers: dict[frozenset[str], Checker] = {}


def tenant_checker() -> Checker:
    """Tenant tables: every table with an `account_id` column, and the table it refers to."""
    tenants = [t for t in Base.metadata.tables.values() if "account_id" in t.c]
    accounts = {fk.column.table.name for t in tenants for fk in t.c.account_id.foreign_keys}
    (account,) = accounts or {"account"}
    names = frozenset(t.name for t in tenants)
    if names not in _checkers:  # one per set of models, so its cache of answers is kept
        _checkers[names] = Checker(names, account_table=account)
    return _checkers[names]


def scope_violations(statements: list[tuple[str, str]]) -> list[str]:
    checker = tenant_checker()
    found: list[str] = []
    for dialect, sql in statements:
        bad = set(checker.unscoped(sql, dialect))
        if not bad:
            continue
        text = " ".join(sql.lower().replace('"', "").replace("`", "").split())
        if any(
            fragment in text and {b.split(" ")[0] for b in bad} <= tables
            for fragment, tables, _ in SCOPE_ALLOWED
        ):
            continue
        found.append(f"{sorted(bad)} unscoped in [{dialect}] {' '.join(sql.split())}")
    return found


@pytest.fixture(autouse=True)
def tenant_scope_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Fail the test if the app sent a statement not scoped to an account (see above)."""
    seen: list[tuple[str, str]] = []
    original = httpx.ASGITransport.handle_async_request

    async def handle(self: httpx.ASGITransport, request: httpx.Request) -> httpx.Response:
        token = _statements.set(seen)
        try:
            return await original(self, request)
        finally:
            _statements.reset(token)

    monkeypatch.setattr(httpx.ASGITransport, "handle_async_request", handle)
    sa.event.listen(sa.Engine, "before_cursor_execute", _record_statement)
    try:
        yield seen
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", _record_statement)
    problems = scope_violations(seen)
    if problems:
        pytest.fail(
            f"{len(problems)} statement(s) not scoped to an account:\n" + "\n".join(problems),
            pytrace=False,
        )


@pytest.fixture
def cache_backend() -> str:
    """Where the app caches: "memory" here; override with params to add "redis"."""
    return "memory"


@pytest.fixture
async def app_cache(
    cache_backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[CacheBackend | None]:
    """None (the app makes its memory cache), or a Redis cache in a fresh namespace."""
    if cache_backend == "memory":
        yield None
        return
    url, cluster = await redis_for(request, cache_backend)
    namespace = f"aether-test:{secrets.token_hex(6)}:"
    yield RedisCache(url, cluster=cluster, namespace=namespace)
    await drop_redis_namespace(url, namespace, cluster=cluster)


async def redis_for(request: pytest.FixtureRequest, cache_backend: str) -> tuple[str, bool]:
    """The URL and cluster flag of "redis", "redis-cluster" or "redis-sentinel"."""
    if cache_backend == "redis":
        url = redis_url()
        try:
            await check_redis(url)
        except Exception as exc:
            unavailable("redis", exc)
        return url, False
    deployment = request.getfixturevalue(cache_backend.replace("-", "_"))
    assert isinstance(deployment, RedisDeployment)
    return deployment.url, deployment.cluster


async def make_api(settings: Settings, cache: CacheBackend | None) -> Api:
    """An app on `settings` (and `cache`) with tenants alpha and beta and a system key."""
    rt = build_runtime(settings, cache=cache)
    app = create_app(settings, runtime=rt)
    a = await make_tenant(rt, "alpha")
    b = await make_tenant(rt, "beta")
    async with rt.engine.begin() as conn:
        system = await insert_api_key(conn, rt.tables, account_id=None, name="sys", role="system")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://aether.test",
        event_hooks={"response": [ResponseSchemaCheck(rt)]},
    )
    return Api(client=client, runtime=rt, a=a, b=b, system_key=system.key, app=app)


@pytest.fixture
async def api(
    database_url: str, tmp_path: Path, app_cache: CacheBackend | None
) -> AsyncIterator[Api]:
    made = await make_api(make_settings(database_url, tmp_path), app_cache)
    async with made.client:
        yield made
    await made.runtime.close()
