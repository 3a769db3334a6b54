"""What a running app holds: settings, registry, plans, engine, cache, blob store, verifiers.

Built once per process by `build_runtime` (at start-up, in the lifespan) and handed to
handlers through `request.app.state.runtime`; nothing here is a module-level global.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from engine.auth.jwt import JwtVerifier
from engine.auth.principal_cache import PrincipalCache
from engine.blobs import BlobStore, create_blob_store
from engine.cache import CacheBackend, RedisCache, create_cache
from engine.db import create_engine, dialect_name
from engine.direct import DirectReader
from engine.ids import IdCache
from engine.plans import ReadPlan, build_plans
from engine.ratelimit import LoginLimiter, RateLimiter
from engine.replicas import ReadRouter
from engine.settings import Settings, SettingsError, resolve_jwt_key
from engine.shutdown import ShutdownState
from registry.descriptors import Registry
from registry.introspect import introspect, load_models
from registry.types import WriteDecoder


@dataclass
class Runtime:
    settings: Settings
    registry: Registry
    tables: dict[str, sa.Table]
    plans: dict[str, ReadPlan]
    decoders: dict[str, WriteDecoder]
    engine: AsyncEngine  # transactions: work that spans statements
    reader: AsyncEngine  # autocommit: single statements, reads above all
    cache: CacheBackend
    blobs: BlobStore
    jwt: JwtVerifier
    rate_limiter: RateLimiter
    login_limiter: LoginLimiter
    dialect: str
    cursor_key: bytes  # encrypts and authenticates keyset cursors; derived from the JWT key
    principals: PrincipalCache
    ids: IdCache
    reads: ReadRouter | None = None  # the read replica and who reads the primary for now
    shutdown: ShutdownState = field(default_factory=ShutdownState)
    #: What the app's parts built on this runtime hold open (the change feed's Redis client,
    #: the legacy usage store): closed first by `close()`, so every way of ending a runtime
    #: (the app's lifespan, a test) releases them.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    documents: dict[str, Any] = field(default_factory=dict)  # encoded schema documents
    blob_store_id: str | None = None  # set once the store is bound (engine.blob_binding)
    direct: DirectReader = field(init=False)  # the hot prebuilt reads, on `reader`'s driver

    def __post_init__(self) -> None:
        self.direct = DirectReader(self.reader)

    @property
    def engines(self) -> tuple[AsyncEngine, ...]:
        replica = () if self.reads is None else (self.reads.replica,)
        return (self.engine, self.reader, *replica)

    async def start(self) -> None:
        if isinstance(self.cache, RedisCache):
            await self.cache.warm()
        await self.principals.start()
        await self.ids.start()

    async def close(self) -> None:
        while self.closers:
            await self.closers.pop()()
        await self.principals.close()
        await self.ids.close()
        await self.cache.close()
        await self.blobs.close()
        await self.engine.dispose()
        await self.reader.dispose()
        if self.reads is not None:
            await self.reads.replica.dispose()


def build_registry(settings: Settings) -> tuple[Registry, dict[str, sa.Table]]:
    """Import the model modules and introspect them (refusing unsafe models)."""
    load_models(settings.model_modules)
    from models.base import Base

    registry = introspect(Base)
    return registry, dict(Base.metadata.tables)


def build_runtime(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    reader: AsyncEngine | None = None,
    cache: CacheBackend | None = None,
    replica: AsyncEngine | None = None,
) -> Runtime:
    settings = resolve_jwt_key(settings)
    registry, tables = build_registry(settings)
    cache = cache or create_cache(settings)
    reader = reader or create_engine(settings, autocommit=True)
    return Runtime(
        settings=settings,
        registry=registry,
        tables=tables,
        plans=build_plans(registry, tables),
        decoders={obj.name: WriteDecoder(obj) for obj in registry},
        engine=engine or create_engine(settings),
        reader=reader,
        cache=cache,
        blobs=create_blob_store(settings),
        jwt=JwtVerifier.from_settings(settings),
        rate_limiter=RateLimiter(
            cache, settings.rate_limit.limit, settings.rate_limit.period_seconds
        ),
        login_limiter=LoginLimiter.from_settings(cache, settings),
        dialect=dialect_name(settings.database_url),
        cursor_key=cursor_key(settings),
        principals=PrincipalCache(
            settings.auth_cache_seconds, settings.redis_url, cluster=settings.redis_cluster
        ),
        ids=IdCache(cache, settings.redis_url, cluster=settings.redis_cluster),
        reads=read_router(settings, reader, cache, replica),
    )


def read_router(
    settings: Settings,
    primary: AsyncEngine,
    cache: CacheBackend,
    replica: AsyncEngine | None = None,
) -> ReadRouter | None:
    """The router onto `AE_DATABASE_READ_URL` (None without one); stickiness is shared
    through the cache when it is Redis, so every worker honours it."""
    url = settings.database_read_url
    if replica is None and not url:
        return None
    if url and dialect_name(url) != dialect_name(settings.database_url):
        raise SettingsError("AE_DATABASE_READ_URL must name the same kind of database")
    if replica is None:
        assert url is not None
        replica_settings = msgspec.structs.replace(settings, database_url=url)
        replica = create_engine(replica_settings, autocommit=True)
    shared = cache if settings.redis_url else None
    return ReadRouter(primary, replica, shared=shared)


def cursor_key(settings: Settings) -> bytes:
    """A 32-byte key for cursors, derived (HKDF-SHA256) from `AE_API_JWT_KEY`."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"aether-cursor-key")
    return hkdf.derive(settings.jwt_key.encode())


def get_runtime(conn: HTTPConnection) -> Runtime:
    runtime = conn.app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime
