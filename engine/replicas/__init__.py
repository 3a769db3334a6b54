"""Read replicas (`AE_DATABASE_READ_URL`): reads go to the replica, writes to the primary.

`ReadRouter` picks the engine of each read-only request (GET of an item or a list, search,
downloads); every write, and every statement a write runs to check what it writes, goes
to the primary. A client reads its own writes: within a request (a write reads the
primary), and for `STICKY_SECONDS` after it wrote, every read of the same principal
(API key or user) goes to the primary too, on every worker when Redis is configured
(`StickyWritesMiddleware` marks the principal before the write's answer leaves). A
replica that cannot answer costs one failed attempt: the read is run again on the
primary and the replica is left alone for `REPLICA_RETRY_SECONDS`. The hot prebuilt reads
that skip SQLAlchemy (`engine.direct`) are routed the same way (`direct_rows`).
"""

from engine.replicas.router import (
    REPLICA_RETRY_SECONDS,
    STICKY_SECONDS,
    ReadRouter,
    StickyWritesMiddleware,
    direct_rows,
    read_for,
)

__all__ = [
    "REPLICA_RETRY_SECONDS",
    "STICKY_SECONDS",
    "ReadRouter",
    "StickyWritesMiddleware",
    "direct_rows",
    "read_for",
]
