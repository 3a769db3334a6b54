"""`engine.redis_client`: sentinel URLs, the checks made at start-up, hash tags."""

from __future__ import annotations

import pytest

from engine.cache import RedisCache
from engine.redis_client import SentinelUrl, account_tag, hash_tag, parse_sentinel_url
from engine.settings import SettingsError, load_settings


def test_a_sentinel_url_names_sentinels_service_db_and_passwords() -> None:
    found = parse_sentinel_url(
        "redis+sentinel://app:s%40cret@h1,h2:26380,[::1]:26381/mymaster/2?sentinel_password=sp"
    )
    assert found == SentinelUrl(
        sentinels=(("h1", 26379), ("h2", 26380), ("::1", 26381)),
        service="mymaster",
        db=2,
        username="app",
        password="s@cret",
        sentinel_password="sp",
        ssl=False,
    )
    plain = parse_sentinel_url("rediss+sentinel://:pw@h1/m")
    assert (plain.password, plain.username, plain.db, plain.ssl) == ("pw", None, 0, True)


@pytest.mark.parametrize(
    ("url", "cluster", "message"),
    [
        ("redis+sentinel://h1/aether", True, "cannot be used with AE_REDIS_CLUSTER"),
        ("redis+sentinel://h1:26379,h2", False, "names the master's service"),
        ("redis+sentinel://h1,/m", False, "at least one host"),
        ("redis+sentinel://h1:99999/m", False, "bad port"),
        ("redis+sentinel://h1/m/x", False, "is a number"),
        ("redis+sentinel://h1/m/0/1", False, "/service or /service/db"),
        ("redis+sentinel://h1/m?oops=1", False, "unknown sentinel URL option"),
        ("redis://h1:6379/3", True, "database 0 only"),
        ("unix:///tmp/redis.sock", True, "over TCP"),
        ("http://h1", False, "scheme must be"),
    ],
)
def test_bad_redis_urls_are_refused_at_start_up(url: str, cluster: bool, message: str) -> None:
    env = {"AE_ENV": "test", "AE_REDIS_URL": url, "AE_REDIS_CLUSTER": str(cluster).lower()}
    with pytest.raises(SettingsError) as info:
        load_settings(env, dotenv=None)
    assert "AE_REDIS_URL" in str(info.value) and message in str(info.value)


def test_cluster_mode_needs_a_url_and_takes_booleans() -> None:
    with pytest.raises(SettingsError, match="needs AE_REDIS_URL"):
        load_settings({"AE_ENV": "test", "AE_REDIS_CLUSTER": "1"}, dotenv=None)
    with pytest.raises(SettingsError, match="AE_REDIS_CLUSTER must be true or false"):
        load_settings({"AE_ENV": "test", "AE_REDIS_CLUSTER": "maybe"}, dotenv=None)
    on = load_settings(
        {"AE_ENV": "test", "AE_REDIS_URL": "redis://h:7000", "AE_REDIS_CLUSTER": "true"},
        dotenv=None,
    )
    assert on.redis_cluster and on.redis_url == "redis://h:7000"
    off = load_settings({"AE_ENV": "test", "AE_REDIS_URL": "redis://h/0"}, dotenv=None)
    assert not off.redis_cluster


def test_hash_tags() -> None:
    assert hash_tag("abc") == "{abc}"
    assert account_tag(42) == "{a:42}"
    for bad in ("", "a{b", "a}b"):
        with pytest.raises(ValueError):
            hash_tag(bad)
    with pytest.raises(ValueError):
        RedisCache("redis://127.0.0.1:1/0", namespace="{ae}:")  # would pin every key to a slot
