"""Failed logins per address behind a proxy: `X-Forwarded-For` counts only from trusted
proxies (`AE_FORWARDED_ALLOW_IPS`, passed to uvicorn by `aether serve`)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.e2e.conftest import aether_env, sqlite_url, wait_healthy

pytestmark = pytest.mark.e2e


def test_forwarded_addresses_have_their_own_failed_login_bucket(tmp_path: Path) -> None:
    with aether_env(
        sqlite_url(tmp_path), tmp_path / "work", AE_LOGIN_ADDRESS_RATE_LIMIT="2/hour"
    ) as env:
        behind_proxy = env.with_env(AE_FORWARDED_ALLOW_IPS="127.0.0.1").launch()
        direct = env.launch()
        env.cli("migrate")
        slug = f"px-{secrets.token_hex(4)}"
        env.create_account(slug)
        for server in (behind_proxy, direct):
            assert wait_healthy(server), server.describe()

        def attempt(client: object, forwarded: str) -> int:
            body = {"account": slug, "email": f"x{secrets.token_hex(3)}@x.test", "password": "no"}
            r = client.post(  # type: ignore[attr-defined]
                "/v3/auth/login", json=body, headers={"X-Forwarded-For": forwarded}
            )
            return int(r.status_code)

        with behind_proxy.client() as client:
            assert [attempt(client, "203.0.113.1") for _ in range(3)] == [401, 401, 429]
            assert attempt(client, "203.0.113.2") == 401  # another client behind the proxy
        with direct.client() as client:
            # Not a trusted proxy: the header is ignored and the peer address is the key.
            assert [attempt(client, f"203.0.113.{n}") for n in (3, 4, 5)] == [401, 401, 429]
