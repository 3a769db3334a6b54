"""Configuration: one frozen `Settings` value read from `AE_*` variables.

`load_settings(environ)`: the environment wins over a `.env` file in the working directory,
which wins over the defaults. A bad value fails at start-up naming its key. No signing key
lives in the source: without `AE_API_JWT_KEY`, development and test use a random key made
once and kept beside the local data (`jwt_key_path`); production refuses to start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import os
import re
import secrets
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec
from sqlalchemy.engine import make_url

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/aether.db"
DEFAULT_PAGE_SIZE = 50
DEFAULT_MAX_PAGE_SIZE = 500
#: Longest time a revoked key or a deactivated user may still be honoured by another worker
#: when Redis is not configured (with Redis: within a second).
MAX_AUTH_CACHE_SECONDS = 5.0
DEFAULT_UPLOAD_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_RATE_LIMIT = "600/minute"
#: Seconds a worker told to stop may spend finishing the requests it has (SIGTERM).
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
#: When the legacy `/crud` and `/v2/crud` routes are to be switched off (`Sunset`, RFC 8594).
DEFAULT_LEGACY_SUNSET = "Wed, 30 Jun 2027 23:59:59 GMT"
#: The shortest HMAC key each algorithm accepts outside the test environment (RFC 7518 3.2).
MIN_HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
JWT_KEY_FILE = "jwt.key"
_GENERATED_KEY_BYTES = 64
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)\s*$")
_PERIODS = {"second": 1, "minute": 60, "hour": 3600}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}

Environment = Literal["development", "test", "production"]


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


class Secret(str):
    """A string whose repr hides its value (for keys and passwords)."""

    def __repr__(self) -> str:
        return "Secret('**********')"


class RateLimit(msgspec.Struct, frozen=True):
    limit: int
    period_seconds: int


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    env: Environment = "development"
    database_url: str = DEFAULT_DATABASE_URL
    database_read_url: str | None = None
    redis_url: str | None = None
    redis_cluster: bool = False
    api_jwt_key: Secret | None = None
    #: Other HMAC keys whose HS* tokens verify (never used to sign): a key rotation.
    api_jwt_accepted_keys: tuple[Secret, ...] = ()
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_public_key_file: str | None = None
    jwt_jwks_file: str | None = None
    access_token_ttl: int = 900
    blob_dir: str = "./var/blobs"
    blob_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: Secret | None = None
    upload_max_bytes: int = DEFAULT_UPLOAD_MAX_BYTES
    max_page_size: int = DEFAULT_MAX_PAGE_SIZE
    rate_limit: RateLimit = RateLimit(600, 60)
    login_rate_limit: RateLimit = RateLimit(5, 60)
    login_address_rate_limit: RateLimit = RateLimit(30, 60)
    forwarded_allow_ips: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    keepalive_timeout: int = 5
    model_modules: tuple[str, ...] = ("models",)
    log_level: str = "INFO"
    log_file: str | None = None
    cors_origins: tuple[str, ...] = ()
    legacy_routes: bool = False
    legacy_sunset: str = DEFAULT_LEGACY_SUNSET  # an IMF-fixdate, as the Sunset header sends it
    require_if_match: bool = False
    console: bool = True
    db_pool_size: int = 10
    db_pool_timeout: float = 5.0
    db_statement_timeout_ms: int = 30_000
    db_prepared_statements: int = 64
    auth_cache_seconds: float = 5.0
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT

    @property
    def jwt_key(self) -> str:
        """The HMAC key in force; see `resolve_jwt_key` for settings made without one."""
        if not self.api_jwt_key:
            raise SettingsError("AE_API_JWT_KEY is not set")
        return str(self.api_jwt_key)


def read_dotenv(path: Path) -> dict[str, str]:
    """The `KEY=value` lines of a `.env` file (quotes stripped, comments ignored)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def parse_bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(f"{key} must be true or false, not {value!r}")


def parse_rate_limit(key: str, value: str) -> RateLimit:
    match = _RATE_RE.match(value)
    if not match or int(match.group(1)) < 1:
        raise SettingsError(f"{key} must read N/second, N/minute or N/hour, not {value!r}")
    return RateLimit(int(match.group(1)), _PERIODS[match.group(2)])


def parse_http_date(key: str, value: str) -> str:
    """An HTTP date (`Wed, 30 Jun 2027 23:59:59 GMT`) or an RFC 3339 date or datetime with an
    offset (`2027-06-30`, `2027-06-30T23:59:59Z`), as the IMF-fixdate an HTTP header sends."""
    text = value.strip()
    moment: dt.datetime | None = None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        try:
            moment = dt.datetime.fromisoformat(text)
            if len(text) == 10:  # a bare date: the start of that day, UTC
                moment = moment.replace(tzinfo=dt.UTC)
        except ValueError:
            moment = None
    try:
        if moment is not None and moment.tzinfo is not None:
            return email.utils.format_datetime(moment.astimezone(dt.UTC), usegmt=True)
    except (OverflowError, ValueError):
        pass
    raise SettingsError(
        f"{key} must be an HTTP date (Wed, 30 Jun 2027 23:59:59 GMT) or an RFC 3339 date,"
        f" not {value!r}"
    )


def _int(key: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{key} must be an integer, not {value!r}") from None
    if number < minimum:
        raise SettingsError(f"{key} must be at least {minimum}")
    return number


def _seconds(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{key} must be a number of seconds, not {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise SettingsError(f"{key} must be a finite number of seconds, at least 0")
    return number


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def load_settings(
    environ: Mapping[str, str] | None = None, *, dotenv: Path | None = Path(".env")
) -> Settings:
    """Settings from `environ` (default `os.environ`) over a `.env` file over defaults."""
    values: dict[str, str] = {}
    if dotenv is not None:
        values.update(read_dotenv(dotenv))
    values.update(os.environ if environ is None else environ)
    get = values.get
    kwargs: dict[str, object] = {}
    env = get("AE_ENV", "development").strip() or "development"
    if env not in ("development", "test", "production"):
        raise SettingsError(f"AE_ENV must be development, test or production, not {env!r}")
    kwargs["env"] = env
    for key, name in (
        ("AE_DATABASE_URL", "database_url"),
        ("AE_BLOB_DIR", "blob_dir"),
    ):
        if get(key):
            kwargs[name] = get(key)
    for key, name in (
        ("AE_DATABASE_READ_URL", "database_read_url"),
        ("AE_REDIS_URL", "redis_url"),
        ("AE_JWT_ISSUER", "jwt_issuer"),
        ("AE_JWT_AUDIENCE", "jwt_audience"),
        ("AE_JWT_PUBLIC_KEY_FILE", "jwt_public_key_file"),
        ("AE_JWT_JWKS_FILE", "jwt_jwks_file"),
        ("AE_LOG_FILE", "log_file"),
        ("AE_BLOB_URL", "blob_url"),
        ("AE_S3_ENDPOINT_URL", "s3_endpoint_url"),
        ("AE_S3_REGION", "s3_region"),
        ("AE_S3_ACCESS_KEY_ID", "s3_access_key_id"),
    ):
        kwargs[name] = get(key) or None
    blob_url = kwargs["blob_url"]
    if isinstance(blob_url, str) and blob_url.startswith("file:"):
        # SPEC 10: `file:///path` names the directory store, as AE_BLOB_DIR does.
        kwargs["blob_dir"], kwargs["blob_url"] = _file_url_path(blob_url), None
    if get("AE_S3_SECRET_ACCESS_KEY"):
        kwargs["s3_secret_access_key"] = Secret(get("AE_S3_SECRET_ACCESS_KEY", ""))
    if get("AE_API_JWT_KEY"):
        kwargs["api_jwt_key"] = Secret(get("AE_API_JWT_KEY", ""))
    if get("AE_API_JWT_ACCEPTED_KEYS"):
        kwargs["api_jwt_accepted_keys"] = tuple(
            Secret(k) for k in _list(get("AE_API_JWT_ACCEPTED_KEYS", ""))
        )
    if get("AE_JWT_ALGORITHMS"):
        kwargs["jwt_algorithms"] = _list(get("AE_JWT_ALGORITHMS", ""))
    for key, name, minimum in (
        ("AE_ACCESS_TOKEN_TTL", "access_token_ttl", 1),
        ("AE_UPLOAD_MAX_BYTES", "upload_max_bytes", 1),
        ("AE_MAX_PAGE_SIZE", "max_page_size", 1),
        ("AE_DB_POOL_SIZE", "db_pool_size", 1),
        ("AE_DB_STATEMENT_TIMEOUT_MS", "db_statement_timeout_ms", 0),
        ("AE_DB_PREPARED_STATEMENTS", "db_prepared_statements", 0),
        ("AE_PORT", "port", 1),
        ("AE_WORKERS", "workers", 1),
        ("AE_KEEPALIVE_TIMEOUT", "keepalive_timeout", 1),
    ):
        if get(key):
            kwargs[name] = _int(key, get(key, ""), minimum)
    if get("AE_DB_POOL_TIMEOUT"):
        try:
            kwargs["db_pool_timeout"] = float(get("AE_DB_POOL_TIMEOUT", ""))
        except ValueError:
            raise SettingsError("AE_DB_POOL_TIMEOUT must be a number of seconds") from None
    if get("AE_SHUTDOWN_TIMEOUT"):
        kwargs["shutdown_timeout"] = _seconds("AE_SHUTDOWN_TIMEOUT", get("AE_SHUTDOWN_TIMEOUT", ""))
    if get("AE_AUTH_CACHE_SECONDS"):
        try:
            seconds = float(get("AE_AUTH_CACHE_SECONDS", ""))
        except ValueError:
            raise SettingsError("AE_AUTH_CACHE_SECONDS must be a number of seconds") from None
        if not 0 <= seconds <= MAX_AUTH_CACHE_SECONDS:
            raise SettingsError(
                f"AE_AUTH_CACHE_SECONDS must be between 0 and {MAX_AUTH_CACHE_SECONDS:g}"
            )
        kwargs["auth_cache_seconds"] = seconds
    if get("AE_RATE_LIMIT"):
        kwargs["rate_limit"] = parse_rate_limit("AE_RATE_LIMIT", get("AE_RATE_LIMIT", ""))
    for key, name in (
        ("AE_LOGIN_RATE_LIMIT", "login_rate_limit"),
        ("AE_LOGIN_ADDRESS_RATE_LIMIT", "login_address_rate_limit"),
    ):
        if get(key):
            kwargs[name] = parse_rate_limit(key, get(key, ""))
    kwargs["forwarded_allow_ips"] = (get("AE_FORWARDED_ALLOW_IPS") or "").strip() or None
    if (get("AE_HOST") or "").strip():
        kwargs["host"] = get("AE_HOST", "").strip()
    if get("AE_PORT") and _int("AE_PORT", get("AE_PORT", ""), 1) > 65535:
        raise SettingsError("AE_PORT must be at most 65535")
    if get("AE_MODEL_MODULES"):
        kwargs["model_modules"] = _list(get("AE_MODEL_MODULES", ""))
    if get("AE_LOG_LEVEL"):
        level = get("AE_LOG_LEVEL", "").strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(f"AE_LOG_LEVEL must be a standard level name, not {level!r}")
        kwargs["log_level"] = level
    if get("AE_CORS_ORIGINS"):
        kwargs["cors_origins"] = _list(get("AE_CORS_ORIGINS", ""))
    for key, name in (
        ("AE_LEGACY_ROUTES", "legacy_routes"),
        ("AE_REQUIRE_IF_MATCH", "require_if_match"),
        ("AE_REDIS_CLUSTER", "redis_cluster"),
        ("AE_CONSOLE", "console"),
    ):
        if get(key):
            kwargs[name] = parse_bool(key, get(key, ""))
    if get("AE_LEGACY_SUNSET"):
        kwargs["legacy_sunset"] = parse_http_date("AE_LEGACY_SUNSET", get("AE_LEGACY_SUNSET", ""))
    settings = Settings(**kwargs)  # type: ignore[arg-type]  # keys checked above
    check_redis_url(settings)
    check_blob_url(settings)
    check_jwt_key(settings)
    return resolve_jwt_key(settings)


def check_redis_url(settings: Settings) -> None:
    """Refuse an `AE_REDIS_URL` that names no deployment (with `AE_REDIS_CLUSTER`)."""
    if not settings.redis_url:
        if settings.redis_cluster:
            raise SettingsError("AE_REDIS_CLUSTER=true needs AE_REDIS_URL (any cluster node)")
        return
    from engine.redis_client import check_url

    try:
        check_url(settings.redis_url, cluster=settings.redis_cluster)
    except ValueError as exc:
        raise SettingsError(f"AE_REDIS_URL: {exc}") from None


def _file_url_path(url: str) -> str:
    """The directory of a `file:///path` URL (absolute, no host)."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise SettingsError("AE_BLOB_URL: a directory is file:///absolute/path")
    if parts.query or parts.fragment:
        raise SettingsError("AE_BLOB_URL: a file:// URL takes no query or fragment")
    return urllib.parse.unquote(parts.path)


def check_blob_url(settings: Settings) -> None:
    """Refuse an `AE_BLOB_URL` other than `s3://bucket[/prefix]` (a `file:` one is the
    directory store by now), and half a key pair."""
    if settings.blob_url:
        from engine.blobs.s3 import MAX_S3_BLOB_BYTES, parse_s3_url

        try:
            parse_s3_url(settings.blob_url)
        except ValueError as exc:
            raise SettingsError(f"AE_BLOB_URL: {exc}") from None
        if settings.upload_max_bytes > MAX_S3_BLOB_BYTES:
            raise SettingsError("AE_UPLOAD_MAX_BYTES is at most 5 GiB with an S3 blob store")
    if bool(settings.s3_access_key_id) != bool(settings.s3_secret_access_key):
        raise SettingsError("AE_S3_ACCESS_KEY_ID and AE_S3_SECRET_ACCESS_KEY go together")


def check_jwt_key(settings: Settings) -> None:
    """Refuse a key too short for its algorithms (except under test), or none in production.

    HS256, HS384 and HS512 need keys of at least 32, 48 and 64 bytes (their hash sizes);
    with public-key algorithms alone the key still derives the cursor key: 32 bytes.
    """
    key = settings.api_jwt_key
    if not key:
        if settings.env == "production":
            raise SettingsError("AE_API_JWT_KEY is required when AE_ENV=production")
        return
    if settings.env == "test":
        return
    named = [
        ("AE_API_JWT_KEY", key),
        *(("AE_API_JWT_ACCEPTED_KEYS", k) for k in settings.api_jwt_accepted_keys),
    ]
    for variable, value in named:
        size = len(value.encode())
        for name in settings.jwt_algorithms or ("HS256",):
            needed = MIN_HMAC_KEY_BYTES.get(name, MIN_HMAC_KEY_BYTES["HS256"])
            if size < needed:
                raise SettingsError(
                    f"{variable} must be at least {needed} bytes for {name} (it has {size})"
                )


def jwt_key_path(settings: Settings) -> Path:
    """Where development keeps its generated key: beside the SQLite database file, else
    beside the blob directory (both default to `./var`)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / JWT_KEY_FILE
    return Path(settings.blob_dir).parent / JWT_KEY_FILE


def resolve_jwt_key(settings: Settings) -> Settings:
    """`settings` with an HMAC key: its own, else (development and test) the generated one.

    The generated key is made once (random, 64 bytes of entropy) and written with mode 0600;
    concurrent first starts agree on one key, because the file appears whole or not at all.
    """
    if settings.api_jwt_key:
        return settings
    if settings.env == "production":
        raise SettingsError("AE_API_JWT_KEY is required when AE_ENV=production")
    key = Secret(_read_or_create_key(jwt_key_path(settings)))
    resolved = msgspec.structs.replace(settings, api_jwt_key=key)
    check_jwt_key(resolved)
    return resolved


def _read_or_create_key(path: Path) -> str:
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_urlsafe(_GENERATED_KEY_BYTES) + "\n")
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        return _read_key(path)
    except OSError as exc:
        raise SettingsError(
            f"AE_API_JWT_KEY is not set and the development key {path} cannot be written: {exc}"
        ) from None


def _read_key(path: Path) -> str:
    try:
        key = path.read_text(encoding="ascii").strip()
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as exc:
        raise SettingsError(f"cannot read the development JWT key {path}: {exc}") from None
    if not key:
        raise SettingsError(f"the development JWT key {path} is empty; remove it to make a new one")
    return key
