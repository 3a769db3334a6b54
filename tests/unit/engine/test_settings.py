"""Settings: the JWT key (never one from the source), login limits and proxy headers."""

from __future__ import annotations

import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import engine.settings as settings_module
from engine.settings import (
    JWT_KEY_FILE,
    RateLimit,
    Settings,
    SettingsError,
    load_settings,
    resolve_jwt_key,
)


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"AE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'a.db'}", **extra}


def test_no_signing_key_lives_in_the_source() -> None:
    assert not hasattr(settings_module, "DEFAULT_JWT_KEY")
    with pytest.raises(SettingsError, match="AE_API_JWT_KEY"):
        _ = Settings().jwt_key


def test_development_generates_one_key_beside_the_database(tmp_path: Path) -> None:
    first = load_settings(env_for(tmp_path), dotenv=None)
    assert first.env == "development"
    path = tmp_path / "data" / JWT_KEY_FILE
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.jwt_key.encode()) >= 64
    again = load_settings(env_for(tmp_path), dotenv=None)
    assert again.jwt_key == first.jwt_key
    other = load_settings(env_for(tmp_path / "elsewhere"), dotenv=None)
    assert other.jwt_key != first.jwt_key


def test_generated_key_without_sqlite_goes_beside_the_blob_dir(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql+asyncpg://u@db/x", blob_dir=str(tmp_path / "var" / "blobs")
    )
    resolved = resolve_jwt_key(settings)
    assert (tmp_path / "var" / JWT_KEY_FILE).read_text().strip() == resolved.jwt_key


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: resolve_jwt_key(settings).jwt_key, range(16)))
    assert len(keys) == 1
    assert sorted(os.listdir(tmp_path)) == [JWT_KEY_FILE]


def test_a_key_of_its_own_is_kept_and_no_file_written(tmp_path: Path) -> None:
    settings = load_settings(env_for(tmp_path, AE_API_JWT_KEY="k" * 32), dotenv=None)
    assert settings.jwt_key == "k" * 32
    assert not (tmp_path / "data").exists()


def test_production_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="AE_API_JWT_KEY is required"):
        load_settings(env_for(tmp_path, AE_ENV="production"), dotenv=None)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("env", ["development", "production"])
@pytest.mark.parametrize(("alg", "size"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_every_non_test_environment_refuses_a_short_key(
    tmp_path: Path, env: str, alg: str, size: int
) -> None:
    values = env_for(tmp_path, AE_ENV=env, AE_JWT_ALGORITHMS=alg)
    with pytest.raises(SettingsError, match=f"at least {size} bytes for {alg}"):
        load_settings({**values, "AE_API_JWT_KEY": "k" * (size - 1)}, dotenv=None)
    ok = load_settings({**values, "AE_API_JWT_KEY": "k" * size}, dotenv=None)
    assert ok.jwt_key == "k" * size


def test_production_refuses_a_five_byte_hs512_key(tmp_path: Path) -> None:
    values = env_for(tmp_path, AE_ENV="production", AE_JWT_ALGORITHMS="HS512")
    with pytest.raises(SettingsError, match="AE_API_JWT_KEY"):
        load_settings({**values, "AE_API_JWT_KEY": "short"}, dotenv=None)


def test_the_test_environment_accepts_any_key(tmp_path: Path) -> None:
    values = env_for(tmp_path, AE_ENV="test", AE_API_JWT_KEY="short")
    assert load_settings(values, dotenv=None).jwt_key == "short"


def test_login_limits_and_forwarded_ips(tmp_path: Path) -> None:
    defaults = load_settings(env_for(tmp_path), dotenv=None)
    assert defaults.login_rate_limit == RateLimit(5, 60)
    assert defaults.login_address_rate_limit == RateLimit(30, 60)
    assert defaults.forwarded_allow_ips is None
    values = env_for(
        tmp_path,
        AE_LOGIN_RATE_LIMIT="3/hour",
        AE_LOGIN_ADDRESS_RATE_LIMIT="10/minute",
        AE_FORWARDED_ALLOW_IPS=" 10.0.0.1,10.0.0.2 ",
    )
    set_ = load_settings(values, dotenv=None)
    assert set_.login_rate_limit == RateLimit(3, 3600)
    assert set_.login_address_rate_limit == RateLimit(10, 60)
    assert set_.forwarded_allow_ips == "10.0.0.1,10.0.0.2"
    with pytest.raises(SettingsError, match="AE_LOGIN_RATE_LIMIT"):
        load_settings(env_for(tmp_path, AE_LOGIN_RATE_LIMIT="lots"), dotenv=None)


def test_serve_passes_the_trusted_proxies_to_uvicorn(tmp_path: Path) -> None:
    from engine.cli import build_parser, uvicorn_options

    args = build_parser().parse_args(["serve", "--port", "9000"])
    plain = uvicorn_options(load_settings(env_for(tmp_path), dotenv=None), args)
    assert plain["proxy_headers"] is False and plain["port"] == 9000
    trusting = uvicorn_options(
        load_settings(env_for(tmp_path, AE_FORWARDED_ALLOW_IPS="10.0.0.0/8"), dotenv=None), args
    )
    assert trusting["proxy_headers"] is True
    assert trusting["forwarded_allow_ips"] == "10.0.0.0/8"


def test_read_replica_and_shutdown_timeout(tmp_path: Path) -> None:
    from engine.cli import build_parser, uvicorn_options

    defaults = load_settings(env_for(tmp_path), dotenv=None)
    assert defaults.database_read_url is None
    assert defaults.shutdown_timeout == 30.0
    replica = "mysql+asyncmy://reader@10.0.0.9/aether"
    set_ = load_settings(
        env_for(tmp_path, AE_DATABASE_READ_URL=replica, AE_SHUTDOWN_TIMEOUT="2.5"), dotenv=None
    )
    assert set_.database_read_url == replica
    assert set_.shutdown_timeout == 2.5
    args = build_parser().parse_args(["serve"])
    assert uvicorn_options(set_, args)["timeout_graceful_shutdown"] == 2.5
    for bad in ("soon", "-1", "inf", "nan"):
        with pytest.raises(SettingsError, match="AE_SHUTDOWN_TIMEOUT"):
            load_settings(env_for(tmp_path, AE_SHUTDOWN_TIMEOUT=bad), dotenv=None)


def test_a_replica_of_another_kind_of_database_is_refused(tmp_path: Path) -> None:
    from engine.runtime import build_runtime

    settings = load_settings(
        env_for(tmp_path, AE_DATABASE_READ_URL="postgresql+asyncpg://replica/aether"),
        dotenv=None,
    )
    with pytest.raises(SettingsError, match="AE_DATABASE_READ_URL"):
        build_runtime(settings)


def test_s3_blob_store_settings() -> None:
    from engine.blobs import FileSystemBlobStore, create_blob_store
    from engine.blobs.s3 import S3BlobStore

    env = {
        "AE_ENV": "test",
        "AE_BLOB_URL": "s3://my-bucket/some/prefix/",
        "AE_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AE_S3_REGION": "eu-west-1",
        "AE_S3_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AE_S3_SECRET_ACCESS_KEY": "s3cr3t",
    }
    settings = load_settings(env, dotenv=None)
    assert settings.blob_url == "s3://my-bucket/some/prefix/"
    assert "s3cr3t" not in repr(settings)
    store = create_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.where.prefix) == ("my-bucket", "some/prefix/")
    assert store.blob_key("a" * 64) == "some/prefix/blobs/" + "a" * 64
    assert store.location == "s3://my-bucket/some/prefix at http://127.0.0.1:9000"
    plain = load_settings({"AE_ENV": "test", "AE_BLOB_DIR": "/tmp/x"}, dotenv=None)
    assert isinstance(create_blob_store(plain), FileSystemBlobStore)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AE_BLOB_URL": "/var/blobs"}, "s3://bucket"),
        ({"AE_BLOB_URL": "s3://Bad_Bucket/x"}, "not an S3 bucket name"),
        ({"AE_BLOB_URL": "s3://bucket/a/../b"}, "not a usable key prefix"),
        ({"AE_S3_ACCESS_KEY_ID": "AKID"}, "go together"),
        ({"AE_BLOB_URL": "s3://bucket", "AE_UPLOAD_MAX_BYTES": str(6 * 1024**3)}, "5 GiB"),
    ],
)
def test_bad_s3_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"AE_ENV": "test", **env}, dotenv=None)
    assert message in str(info.value)


def test_every_variable_read_is_in_the_readme_table() -> None:
    root = Path(__file__).resolve().parents[3]
    source = (root / "engine" / "settings.py").read_text(encoding="utf-8")
    read = set(re.findall(r'"(AE_[A-Z0-9_]+)"', source))
    table = [
        line
        for line in (root / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `AE_")
    ]
    documented = set(
        re.findall(r"`(AE_[A-Z0-9_]+)`", "\n".join(row.split(" | ")[0] for row in table))
    )
    assert read - documented == set()
    assert documented - read == set()


def test_serve_listens_where_the_environment_says_and_flags_win(tmp_path: Path) -> None:
    from engine.cli import build_parser, uvicorn_options

    defaults = uvicorn_options(
        load_settings(env_for(tmp_path), dotenv=None), build_parser().parse_args(["serve"])
    )
    assert (defaults["host"], defaults["port"], defaults["workers"]) == ("127.0.0.1", 8000, 1)
    assert defaults["timeout_keep_alive"] == 5
    image = load_settings(
        env_for(
            tmp_path, AE_HOST="0.0.0.0", AE_PORT="8080", AE_WORKERS="2", AE_KEEPALIVE_TIMEOUT="75"
        ),
        dotenv=None,
    )
    from_env = uvicorn_options(image, build_parser().parse_args(["serve"]))
    assert (from_env["host"], from_env["port"], from_env["workers"]) == ("0.0.0.0", 8080, 2)
    assert from_env["timeout_keep_alive"] == 75
    flags = build_parser().parse_args(["serve", "--host", "::1", "--port", "9", "--workers", "3"])
    assert (uvicorn_options(image, flags)["host"], uvicorn_options(image, flags)["port"]) == (
        "::1",
        9,
    )
    assert uvicorn_options(image, flags)["workers"] == 3
    for key, value in (
        ("AE_PORT", "0"),
        ("AE_PORT", "70000"),
        ("AE_WORKERS", "0"),
        ("AE_WORKERS", "two"),
        ("AE_KEEPALIVE_TIMEOUT", "0"),
    ):
        with pytest.raises(SettingsError, match=key):
            load_settings(env_for(tmp_path, **{key: value}), dotenv=None)


def test_prepared_statements_per_connection(tmp_path: Path) -> None:
    assert load_settings(env_for(tmp_path), dotenv=None).db_prepared_statements == 64
    off = load_settings(env_for(tmp_path, AE_DB_PREPARED_STATEMENTS="0"), dotenv=None)
    assert off.db_prepared_statements == 0
    for bad in ("-1", "many"):
        with pytest.raises(SettingsError):
            load_settings(env_for(tmp_path, AE_DB_PREPARED_STATEMENTS=bad), dotenv=None)


def test_a_file_blob_url_names_the_directory_store(tmp_path: Path) -> None:
    """SPEC 10: `AE_BLOB_URL` is `file:///path` or `s3://bucket/prefix`."""
    where = tmp_path / "blobs dir"
    url = "file://" + str(where).replace(" ", "%20")
    settings = load_settings(env_for(tmp_path, AE_BLOB_URL=url), dotenv=None)
    assert (settings.blob_url, settings.blob_dir) == (None, str(where))
    for bad in ("file://host/x", "file:relative", f"{url}?x=1"):
        with pytest.raises(SettingsError):
            load_settings(env_for(tmp_path, AE_BLOB_URL=bad), dotenv=None)
