"""Every Redis connection Aether makes comes from here: one server, Sentinel or Cluster.

`connect(settings)` (or `connect_url(url, cluster=...)`) answers a client for the deployment
`AE_REDIS_URL` and `AE_REDIS_CLUSTER` describe:

- `redis://host:port/db` (or `rediss://`, `unix://`): one server;
- `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]`: the master
  of `service` as the listed sentinels (port 26379 by default) report it, followed across a
  failover; `?sentinel_password=...` when the sentinels ask for one (the password in the URL
  is the data nodes');
- `redis://host:port` with `AE_REDIS_CLUSTER=true`: a Redis Cluster, any node as the seed.

Callers use the commands every kind answers alike: single-key commands, `EVAL` with the
keys of one slot, non-transactional pipelines (split per node in a cluster) and `PUBLISH`.
`subscriber` opens a plain connection for pub/sub: in a cluster a `PUBLISH` reaches every
node, so one subscription on any node hears every message (no sharded channels needed).

Keys of one feature that one command or script touches together must share a hash slot:
`hash_tag("abc")` is `"{abc}"`, and a key holding it is hashed on `abc` alone. Features
that keep data per account (streams, say) tag the account: `account_tag(account_id)`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

__all__ = [
    "SENTINEL_SCHEMES",
    "RedisClient",
    "SentinelUrl",
    "account_tag",
    "connect_url",
    "hash_tag",
    "parse_sentinel_url",
    "subscriber",
]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379

RedisClient = redis.Redis | RedisCluster
"""What `connect` answers; both take the same single-key commands, EVAL and PUBLISH."""


def hash_tag(value: str) -> str:
    """`{value}`: keys holding it land in one cluster slot (braces in `value` refused)."""
    if not value or "{" in value or "}" in value:
        raise ValueError("a hash tag is a non-empty value without braces")
    return "{" + value + "}"


def account_tag(account_id: object) -> str:
    """The hash tag for data kept per account: `{a:<id>}`."""
    return hash_tag(f"a:{account_id}")


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A parsed `redis+sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]`.

    Raises ValueError naming what is wrong (no host, no service, a bad port or db).
    """
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"a sentinel URL starts with redis+sentinel://, not {parts.scheme}://")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = []
    for item in hosts.split(","):
        host, port = _host_port(item.strip())
        sentinels.append((host, port))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a sentinel URL names the master's service: redis+sentinel://h/mymaster")
    if len(path) > 2:
        raise ValueError("a sentinel URL's path is /service or /service/db")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"the database in a sentinel URL is a number, not {path[1]!r}")
        db = int(path[1])
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown sentinel URL option(s): {', '.join(sorted(unknown))}")
    sentinel_password = query.get("sentinel_password", [None])[-1]
    return SentinelUrl(
        sentinels=tuple(sentinels),
        service=path[0],
        db=db,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
        ssl=parts.scheme == "rediss+sentinel",
    )


def _host_port(item: str) -> tuple[str, int]:
    if not item:
        raise ValueError("a sentinel URL lists at least one host")
    if item.startswith("["):  # [::1]:26379
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"no host in {item!r}")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {item!r}")
    return host, int(port_text)


def check_url(url: str, *, cluster: bool) -> None:
    """Raise ValueError when `url` (with the cluster flag) cannot describe a deployment."""
    scheme = urlsplit(url).scheme
    if scheme in SENTINEL_SCHEMES:
        if cluster:
            raise ValueError("a sentinel URL cannot be used with AE_REDIS_CLUSTER=true")
        parse_sentinel_url(url)
        return
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"the scheme must be redis, rediss, unix or redis+sentinel, not {scheme or 'none'}"
        )
    if cluster:
        if scheme == "unix":
            raise ValueError("a cluster is reached over TCP: redis://host:port")
        db = urlsplit(url).path.strip("/")
        if db not in ("", "0"):
            raise ValueError("a cluster has database 0 only")


class _SentinelMaster(redis.Redis):
    """A master client that also closes the sentinel connections it was discovered through."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for client in self.sentinel_manager.sentinels:
                await client.aclose()
            self.sentinel_manager = None


def connect_url(url: str, *, cluster: bool = False, **options: Any) -> RedisClient:
    """A client for the deployment at `url`; `options` are connection options
    (`socket_timeout`, `socket_connect_timeout`, `retry`, ...) given to every node."""
    check_url(url, cluster=cluster)
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        found = parse_sentinel_url(url)
        sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
        if found.sentinel_password:
            sentinel_options["password"] = found.sentinel_password
        if found.ssl:
            sentinel_options["ssl"] = True
        node_options = dict(options)
        if found.ssl:
            node_options["ssl"] = True
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(found.sentinels), sentinel_kwargs=sentinel_options
        )
        master = sentinel.master_for(
            found.service,
            redis_class=_SentinelMaster,
            db=found.db,
            username=found.username,
            password=found.password,
            **node_options,
        )
        assert isinstance(master, _SentinelMaster)
        master.sentinel_manager = sentinel
        return master
    if cluster:
        return RedisCluster.from_url(url, **options)
    return redis.from_url(url, **options)


async def subscriber(url: str, *, cluster: bool = False, **options: Any) -> redis.Redis:
    """A plain connection for SUBSCRIBE that hears what a client on `url` PUBLISHes.

    One server or a sentinel master: a client like `connect_url`'s. A cluster: one node
    picked at random from the cluster's current nodes (a PUBLISH on any node reaches every
    node), with the URL's credentials, so a node that goes away costs one reconnect.
    """
    if not cluster:
        client = connect_url(url, **options)
        assert isinstance(client, redis.Redis)
        return client
    seed = connect_url(url, cluster=True, **options)
    assert isinstance(seed, RedisCluster)
    try:
        await seed.initialize()
        node = random.choice(seed.get_nodes())
    finally:
        await seed.aclose()
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    host = f"[{node.host}]" if ":" in node.host else node.host
    netloc = f"{userinfo}{at}{host}:{node.port}"
    return redis.from_url(parts._replace(netloc=netloc, path="").geturl(), **options)
