"""The `aether` command (SPEC 10).

`serve` writes JSON log lines to stdout; every other command writes only its result to
stdout (logs go to stderr), and `--json` prints exactly one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from engine.settings import Settings, SettingsError, load_settings
from registry.descriptors import TENANT_ROLES

MAX_TOKEN_TTL = 366 * 24 * 3600  # a development token lives a year at most
MIGRATE_HINT = "run `aether migrate` first"

logger = logging.getLogger("aether.cli")


class CommandError(Exception):
    """A command that cannot do what was asked; printed to stderr, exit status 1."""


def _print_json(value: Any, indent: int | None = None) -> None:
    encoded = msgspec.json.encode(value)
    if indent is not None:
        encoded = msgspec.json.format(encoded, indent=indent)
    sys.stdout.write(encoded.decode() + "\n")


def _first_line(exc: BaseException) -> str:
    """A one-line reason: the driver's own error when SQLAlchemy wraps one."""
    import sqlalchemy as sa

    inner = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    lines = str(inner).strip().splitlines()
    return lines[0] if lines else type(inner).__name__


def _where(settings: Settings) -> str:
    """The database URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


async def _check_database(settings: Settings) -> None:
    from engine.db import create_engine
    from engine.migrate import current_revision, is_at_head

    engine = create_engine(settings)
    try:
        if await is_at_head(engine, settings):
            return
        revision = await current_revision(engine)
    except Exception as exc:  # the driver's errors differ: refused, unknown host, auth, ...
        raise CommandError(
            f"cannot reach the database {_where(settings)}: {_first_line(exc)}"
        ) from exc
    finally:
        await engine.dispose()
    if revision is None:
        raise CommandError(f"the database {_where(settings)} is not migrated: {MIGRATE_HINT}")
    raise CommandError(
        f"the database {_where(settings)} is at revision {revision}, not the latest: "
        "run `aether migrate`"
    )


def _require_database(settings: Settings) -> None:
    """Refuse, in one line, a database that is missing, unreachable or not at the head.

    A SQLite file that does not exist is not created (connecting would leave an empty one).
    """
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    database = url.database or ""
    on_disk = database not in ("", ":memory:") and not database.startswith("file:")
    if url.get_backend_name() == "sqlite" and on_disk and not Path(database).is_file():
        raise CommandError(f"no database at {database}: {MIGRATE_HINT}")
    asyncio.run(_check_database(settings))


def _settings() -> Settings:
    return load_settings()


def _log_to_stderr(settings: Settings) -> None:
    from engine.logging import configure_logging

    configure_logging(settings, stream=sys.stderr)


def uvicorn_options(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """What `aether serve` hands uvicorn. Host, port and workers come from the flags, else
    from `AE_HOST`, `AE_PORT` and `AE_WORKERS` (how the container image sets them).
    `X-Forwarded-For`/`-Proto` are honoured only from the proxies in
    `AE_FORWARDED_ALLOW_IPS` (addresses or networks, comma-separated, or `*`); without it
    they are ignored, and the client address is the peer's. An idle keep-alive connection
    is closed after `AE_KEEPALIVE_TIMEOUT` seconds: behind a proxy or load balancer that
    reuses connections, make it longer than the proxy's own idle timeout, so the proxy
    never sends a request on a connection the server is closing."""
    return {
        "factory": True,
        "host": settings.host if args.host is None else args.host,
        "port": settings.port if args.port is None else args.port,
        "workers": settings.workers if args.workers is None else args.workers,
        "log_config": None,
        "access_log": False,
        "proxy_headers": settings.forwarded_allow_ips is not None,
        "forwarded_allow_ips": settings.forwarded_allow_ips or "",
        "server_header": False,
        "timeout_graceful_shutdown": settings.shutdown_timeout,
        "timeout_keep_alive": settings.keepalive_timeout,
    }


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    settings = _settings()
    from engine.logging import configure_logging

    configure_logging(settings)
    from engine.runtime import build_registry

    build_registry(settings)  # refuse unsafe models before binding the port
    uvicorn.run("engine.asgi:create", **uvicorn_options(settings, args))


def cmd_migrate(args: argparse.Namespace) -> None:
    from engine.migrate import upgrade

    settings = _settings()
    _log_to_stderr(settings)
    asyncio.run(upgrade(settings, args.revision))
    sys.stdout.write(f"database at {args.revision}\n")


def cmd_makemigrations(args: argparse.Namespace) -> None:
    from engine.migrate import make_migration

    settings = _settings()
    _log_to_stderr(settings)
    path = make_migration(settings, args.message)
    if path is None:
        sys.stderr.write("aether: no changes in the models; no migration written\n")
    else:
        sys.stdout.write(f"{path}\n")


async def _create_account(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    from engine.db import create_engine
    from engine.provisioning import find_account, insert_account
    from engine.runtime import build_registry

    _, tables = build_registry(settings)
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            if await find_account(conn, tables, args.slug) is not None:
                raise CommandError(f"an account with the slug {args.slug!r} exists")
            made = await insert_account(
                conn,
                tables,
                name=args.name,
                slug=args.slug,
                owner_email=args.owner_email,
                owner_password=args.owner_password,
            )
    finally:
        await engine.dispose()
    return {"account_id": made.account_id, "user_id": made.user_id, "api_key": made.api_key}


def _check_account_args(args: argparse.Namespace) -> None:
    import re

    from models.accounts import SLUG_PATTERN

    if not re.fullmatch(SLUG_PATTERN, args.slug):
        raise CommandError(f"--slug must match {SLUG_PATTERN}")
    if not args.name or len(args.name) > 200:
        raise CommandError("--name must be 1 to 200 characters")
    if "@" not in args.owner_email or len(args.owner_email) > 320:
        raise CommandError("--owner-email must be an email address")
    if args.owner_password is not None and len(args.owner_password) < 12:
        raise CommandError("--owner-password must be at least 12 characters")


def cmd_create_account(args: argparse.Namespace) -> None:
    _check_account_args(args)
    settings = _settings()
    _log_to_stderr(settings)
    _require_database(settings)
    made = asyncio.run(_create_account(settings, args))
    if args.json:
        _print_json(made)
    else:
        sys.stdout.write(
            f"account {made['account_id']} (owner {made['user_id']})\napi key: {made['api_key']}\n"
        )


async def _create_api_key(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    from engine.db import create_engine
    from engine.provisioning import find_account, insert_api_key
    from engine.runtime import build_registry

    _, tables = build_registry(settings)
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            account_id: int | None = None
            role = "system"
            if not args.system:
                found = await find_account(conn, tables, args.account)
                if found is None:
                    raise CommandError(f"no account with the slug {args.account!r}")
                account_id, role = found[0], args.role
            made = await insert_api_key(
                conn, tables, account_id=account_id, name=args.name, role=role
            )
    finally:
        await engine.dispose()
    return {"id": made.id, "api_key": made.key}


def cmd_create_api_key(args: argparse.Namespace) -> None:
    if not args.system and (not args.account or not args.role):
        raise CommandError("--account and --role are required (or --system)")
    if not args.name or len(args.name) > 100:
        raise CommandError("--name must be 1 to 100 characters")
    settings = _settings()
    _log_to_stderr(settings)
    _require_database(settings)
    made = asyncio.run(_create_api_key(settings, args))
    if args.json:
        _print_json(made)
    else:
        sys.stdout.write(f"{made['api_key']}\n")


async def _token(settings: Settings, args: argparse.Namespace) -> str:
    from engine.auth.jwt import JwtVerifier
    from engine.db import create_engine
    from engine.provisioning import find_account
    from engine.runtime import build_registry

    _, tables = build_registry(settings)
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            found = await find_account(conn, tables, args.account)
    finally:
        await engine.dispose()
    if found is None:
        raise CommandError(f"no account with the slug {args.account!r}")
    ttl = settings.access_token_ttl if args.ttl is None else args.ttl
    return JwtVerifier.from_settings(settings).issue(
        sub=f"cli-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}",
        acct=found[1],
        role=args.role,
        ttl_seconds=ttl,
    )


def cmd_token(args: argparse.Namespace) -> None:
    if args.ttl is not None and not 1 <= args.ttl <= MAX_TOKEN_TTL:
        raise CommandError(f"--ttl must be 1 to {MAX_TOKEN_TTL} seconds")
    settings = _settings()
    _log_to_stderr(settings)
    _require_database(settings)
    sys.stdout.write(asyncio.run(_token(settings, args)) + "\n")


def cmd_openapi(args: argparse.Namespace) -> None:
    from engine.app import default_actions
    from engine.runtime import build_runtime
    from engine.schemas import openapi_document

    settings = _settings()
    _log_to_stderr(settings)
    indent = args.indent
    if indent is None and sys.stdout.isatty():
        indent = 2
    if indent is not None and not 0 <= indent <= 16:
        raise CommandError("--indent must be 0 to 16 spaces")
    rt = build_runtime(settings)
    document = openapi_document(rt, default_actions())
    asyncio.run(rt.close())
    _print_json(document, indent)


def cmd_routes(args: argparse.Namespace) -> None:
    from engine.app import default_actions
    from engine.runtime import build_runtime
    from engine.schemas import openapi_document

    settings = _settings()
    _log_to_stderr(settings)
    rt = build_runtime(settings)
    doc = openapi_document(rt, default_actions())
    asyncio.run(rt.close())
    for path, item in doc["paths"].items():
        methods = [m.upper() for m in item if m in ("get", "post", "patch", "delete", "put")]
        sys.stdout.write(f"{','.join(methods):<24} {path}\n")


def cmd_gc_blobs(args: argparse.Namespace) -> None:
    from engine.blob_binding import BlobStoreMismatchError
    from engine.gc import gc_blobs

    settings = _settings()
    _log_to_stderr(settings)
    _require_database(settings)
    try:
        report = asyncio.run(gc_blobs(settings, dry_run=args.dry_run, grace_seconds=args.grace))
    except BlobStoreMismatchError as exc:
        raise CommandError(f"refusing to collect garbage: {exc}") from exc
    verb = "would remove" if args.dry_run else "removed"
    for sha in report.removed_blobs:
        sys.stdout.write(f"{verb} blob {sha}\n")
    for name in report.removed_temp_files:
        sys.stdout.write(f"{verb} temporary file {name}\n")
    sys.stdout.write(
        f"{verb} {len(report.removed_blobs)} blob(s) and "
        f"{len(report.removed_temp_files)} temporary file(s)\n"
    )


def cmd_demo(args: argparse.Namespace) -> None:
    from engine.demo import load_demo

    settings = _settings()
    _log_to_stderr(settings)
    _require_database(settings)
    key, created = asyncio.run(load_demo(settings))
    if args.json:
        _print_json({"api_key": key, "created": created})
    else:
        sys.stdout.write(f"{key}\n")


def _ops(work: Any) -> Any:
    """Run an operations coroutine; its refusals become the one-line error."""
    from engine.ops import OpsError

    try:
        return asyncio.run(work)
    except OpsError as exc:
        raise CommandError(str(exc)) from exc


def cmd_backup(args: argparse.Namespace) -> None:
    from engine.ops import backup

    settings = _settings()
    _log_to_stderr(settings)
    _require_database(settings)
    done = _ops(backup(settings, Path(args.output)))
    if args.json:
        _print_json(done)
    else:
        sys.stdout.write(f"{done.path}\n")


def cmd_restore(args: argparse.Namespace) -> None:
    from engine.ops import restore

    settings = _settings()
    _log_to_stderr(settings)
    done = _ops(restore(settings, Path(args.archive), force=args.force))
    if args.json:
        _print_json(done)
        return
    sys.stdout.write(
        f"restored {done.rows} row(s) in {done.tables} table(s) and {done.blobs} blob(s); "
        f"database at revision {done.revision}\n"
    )
    if not done.head:
        sys.stderr.write(
            "aether: the archive's schema is older than this version: run `aether migrate`\n"
        )


def cmd_export(args: argparse.Namespace) -> None:
    from engine.ops import export_account

    settings = _settings()
    _log_to_stderr(settings)
    _require_database(settings)
    done = _ops(export_account(settings, args.account, Path(args.output)))
    if args.json:
        _print_json(done)
    else:
        sys.stdout.write(f"{done.path}\n")


def cmd_import(args: argparse.Namespace) -> None:
    from engine.ops import import_account

    settings = _settings()
    _log_to_stderr(settings)
    _require_database(settings)
    done = _ops(import_account(settings, Path(args.archive)))
    if args.json:
        _print_json(done)
    else:
        sys.stdout.write(
            f"account {done.account} ({done.account_id}): {done.rows} row(s), "
            f"{done.blobs} blob(s)\n"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aether", description="Aether CRUD engine")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the API")
    p.add_argument("--host", help="default AE_HOST, else 127.0.0.1")
    p.add_argument("--port", type=int, help="default AE_PORT, else 8000")
    p.add_argument("--workers", type=int, help="default AE_WORKERS, else 1")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("migrate", help="bring the database to the latest migration")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("makemigrations", help="autogenerate a migration from the models")
    p.add_argument("-m", "--message", required=True)
    p.set_defaults(func=cmd_makemigrations)
    p = sub.add_parser("create-account", help="make an account, its owner and an owner key")
    p.add_argument("--name", required=True)
    p.add_argument("--slug", required=True)
    p.add_argument("--owner-email", required=True)
    p.add_argument("--owner-password")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_create_account)
    p = sub.add_parser("create-api-key", help="make an API key")
    p.add_argument("--account")
    p.add_argument("--name", required=True)
    p.add_argument("--role", choices=TENANT_ROLES)
    p.add_argument("--system", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_create_api_key)
    p = sub.add_parser("token", help="print a signed JWT (development and tests)")
    p.add_argument("--account", required=True)
    p.add_argument("--role", required=True, choices=TENANT_ROLES)
    p.add_argument("--ttl", type=int)
    p.set_defaults(func=cmd_token)
    p = sub.add_parser("openapi", help="print the OpenAPI document")
    p.add_argument(
        "--indent",
        type=int,
        nargs="?",
        const=2,
        help="pretty-print with this many spaces (default 2; always on a terminal)",
    )
    p.set_defaults(func=cmd_openapi)
    sub.add_parser("routes", help="list the generated routes").set_defaults(func=cmd_routes)
    p = sub.add_parser("gc-blobs", help="remove blobs no file row references")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument(
        "--grace", type=float, default=3600.0, help="keep blobs younger than this (seconds)"
    )
    p.set_defaults(func=cmd_gc_blobs)
    p = sub.add_parser("demo", help="load the demo account once and print its key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("backup", help="archive the database and the blobs its rows reference")
    p.add_argument("--output", default=".", help="directory for the archive (default: here)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="restore a backup into an empty database and blob store")
    p.add_argument("archive")
    p.add_argument("--force", action="store_true", help="replace a non-empty target")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_restore)
    p = sub.add_parser("export", help="one account's rows and blobs as a portable archive")
    p.add_argument("--account", required=True, help="the account's slug")
    p.add_argument("--output", default=".", help="directory for the archive (default: here)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import", help="load an exported account (same public ids)")
    p.add_argument("archive")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import)
    return parser


def _stdout_gone() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A failure is one line on stderr and exit status 1, never a traceback
    (`AE_LOG_LEVEL=DEBUG` logs the traceback of an unexpected error)."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except KeyboardInterrupt:
        sys.stderr.write("aether: interrupted\n")
        return 130
    except BrokenPipeError:  # `aether routes | head -1`: the reader left early
        _stdout_gone()
        sys.stderr.write("aether: output not fully written: the pipe was closed\n")
        return 1
    except (CommandError, SettingsError) as exc:
        sys.stderr.write(f"aether: {exc}\n")
        return 1
    except Exception as exc:  # a failed command says why in one line
        logger.debug("command failed", exc_info=exc)
        sys.stderr.write(f"aether: {type(exc).__name__}: {_first_line(exc)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
