"""A short run of the soak (`make soak` runs it for 3 minutes with 64 clients): two workers
on MariaDB and Redis, nested reads two and three levels deep with keys and JWTs of every
role of three tenants while writes and deletes go on. Every answer must be the one the
request had to get; no timeouts; no 5xx in the server's log."""

from __future__ import annotations

from pathlib import Path

from tests.backends import check_redis, fresh_database, redis_url, unavailable
from tests.soak.run import run_soak


async def test_short_soak_has_no_unexpected_status(tmp_path: Path) -> None:
    url = redis_url()
    try:
        await check_redis(url)
    except Exception as exc:
        unavailable("redis", exc)
    async with fresh_database("mariadb", tmp_path) as database_url:
        report = await run_soak(
            database_url, url, clients=16, duration=10, workers=2, work=tmp_path, events=3
        )
    assert report["requests"] > 0
    assert report["unexpected"] == 0, report["unexpected_samples"]
    assert report["timeouts"] == 0
    assert report["server_logged_5xx"] == 0
    assert report["id_cache"]["hits"] > 0, report
