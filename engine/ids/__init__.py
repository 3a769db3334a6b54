"""Id resolution: public id → (type, internal key, parent), per account.

`IdCache` answers "what is this id?" where the URL does not say (downloads by a
container's id) from an in-process LRU in front of the shared cache (Redis when
`AE_REDIS_URL` is set). It is filled when a download resolves an id (a create does not fill it:
that would cost every create a shared-cache write for a download that may never come; reads
by id take the driver-level fast path and stay free of cache work),
and forgotten when an object is deleted or moves to another parent: in this worker at once,
in every other through a Redis pub/sub message. Entries are keyed by the internal account
id, and every statement that uses one still carries the account predicate and the public
id: a stale or wrong entry can only cost a miss (the statement finds nothing and the
lookup runs without it), never another account's object or a wrong one.
"""

from engine.ids.cache import IdCache, IdEntry

__all__ = ["IdCache", "IdEntry"]
