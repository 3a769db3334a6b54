"""What a driver error means for the client: the database cannot answer now, or it lacks
the schema the models need, or neither (a bug: logged, answered with a bare 500).

Only the first two are 503s. Bad input must never get this far: the search parser and the
write decoder bound what reaches SQL, so a driver refusing a statement is a bug to fix,
not "the database is not answering".
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import exc as sa_exc

Meaning = Literal["unavailable", "not_migrated"]

#: MariaDB error numbers: too many connections, shutting down, lock wait timeout, deadlock,
#: connection killed, statement time limit, cannot connect (socket, TCP, host), server gone
#: away, connection lost, out of sync, SSL, read or write timeout, disconnected when idle.
MARIADB_UNAVAILABLE = frozenset(
    {1040, 1053, 1205, 1213, 1927, 1969, 2002, 2003, 2005, 2006, 2013, 2014, 2026, 2055, 4031}
)
#: MariaDB: no such table, unknown column.
MARIADB_NOT_MIGRATED = frozenset({1146, 1054})
#: PostgreSQL SQLSTATE classes: connection exception, insufficient resources, operator
#: intervention (shutdown, crash, cannot connect now, statement timeout).
POSTGRES_UNAVAILABLE_CLASSES = ("08", "53", "57")
#: PostgreSQL SQLSTATEs: serialization failure, deadlock, lock not available.
POSTGRES_UNAVAILABLE = frozenset({"40001", "40P01", "55P03"})
#: PostgreSQL: undefined table, undefined column.
POSTGRES_NOT_MIGRATED = frozenset({"42P01", "42703"})
#: SQLite result codes: busy, locked, cannot open, disk full, out of memory, protocol.
SQLITE_UNAVAILABLE = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_NOMEM"}
)
#: SQLite reports a missing table or column only in its message.
SQLITE_NOT_MIGRATED = ("no such table", "no such column", "has no column named")


def meaning(exc: BaseException) -> Meaning | None:
    """`unavailable`, `not_migrated`, or None for an error that says nothing of the kind."""
    if isinstance(exc, sa_exc.TimeoutError | OSError):  # pool timeout, refused, timed out
        return "unavailable"
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    if exc.connection_invalidated:
        return "unavailable"
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # MariaDB: the error number
        if args[0] in MARIADB_NOT_MIGRATED:
            return "not_migrated"
        return "unavailable" if args[0] in MARIADB_UNAVAILABLE else None
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state:
        state = str(state)
        if state in POSTGRES_NOT_MIGRATED:
            return "not_migrated"
        if state in POSTGRES_UNAVAILABLE or state.startswith(POSTGRES_UNAVAILABLE_CLASSES):
            return "unavailable"
        return None
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str):
        if name in SQLITE_UNAVAILABLE or name.startswith("SQLITE_IOERR"):
            return "unavailable"
        if any(text in str(orig) for text in SQLITE_NOT_MIGRATED):
            return "not_migrated"
    if isinstance(orig, OSError):  # a driver that lets the socket's error through
        return "unavailable"
    return None
