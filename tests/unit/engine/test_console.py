"""`/console`: the packaged page and assets, their Content-Security-Policy, `AE_CONSOLE`."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest
from starlette.applications import Starlette

from engine.console import ASSETS, CONTENT_SECURITY_POLICY, STATIC_DIR, console_routes
from engine.errors import AetherError
from engine.problems import handle_aether_error
from engine.settings import Settings, SettingsError, load_settings


def client_for(settings: Settings, root_path: str = "") -> httpx.AsyncClient:
    app = Starlette(
        routes=console_routes(settings), exception_handlers={AetherError: handle_aether_error}
    )
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag
        for name, _ in attrs:
            if name.startswith("on"):
                self.inline.append(f"{tag} {name}")

    def handle_data(self, data: str) -> None:
        if self._open in ("script", "style") and data.strip():
            self.inline.append(f"{self._open}: {data[:40]}")

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def test_the_built_files_are_packaged_beside_the_module() -> None:
    assert (STATIC_DIR / "index.html").is_file()
    for name in ASSETS:
        assert (STATIC_DIR / name).stat().st_size > 0, name


def test_the_page_holds_no_inline_code_and_loads_only_its_own_assets() -> None:
    parser = _Tags()
    parser.feed((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
    assert parser.inline == []
    scripts = [attrs.get("src") for tag, attrs in parser.tags if tag == "script"]
    sheets = [
        attrs.get("href")
        for tag, attrs in parser.tags
        if tag == "link" and attrs.get("rel") == "stylesheet"
    ]
    assert scripts == ["console.js"] and sheets == ["console.css"]


def test_the_bundle_needs_no_eval() -> None:
    """The policy has no 'unsafe-eval': nothing in the bundle may compile code at run time
    (the form validator interprets schemas instead of compiling them, as Ajv would)."""
    script = (STATIC_DIR / "console.js").read_text(encoding="utf-8")
    assert "new Function(" not in script and not re.search(r"\beval\(", script)
    assert "sourceMappingURL" not in script


@pytest.mark.parametrize("path", ["/console/", "/console/console.js", "/console/console.css"])
async def test_every_console_answer_carries_a_strict_policy(path: str) -> None:
    async with client_for(Settings()) as client:
        response = await client.get(path)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in policy and "unsafe" not in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["content-type"].startswith(
        {"/console/": "text/html", "/console/console.js": "text/javascript"}.get(path, "text/css")
    )


async def test_the_bare_path_redirects_under_the_root_path() -> None:
    async with client_for(Settings(), root_path="/api") as client:
        response = await client.get("/console")
    assert response.status_code == 307
    assert response.headers["location"] == "/api/console/"


@pytest.mark.parametrize("name", ["index.htm", "..%2Fsettings.py", "build.mjs", "static"])
async def test_only_the_listed_assets_are_served(name: str) -> None:
    async with client_for(Settings()) as client:
        response = await client.get(f"/console/{name}")
    assert response.status_code == 404
    assert "console_routes" not in response.text


def test_ae_console_false_leaves_the_routes_out() -> None:
    assert console_routes(Settings(console=False)) == []
    assert len(console_routes(Settings())) == 3


@pytest.mark.parametrize(
    ("value", "expected"), [("false", False), ("0", False), ("true", True), ("1", True)]
)
def test_ae_console_reads_a_boolean(value: str, expected: bool) -> None:
    settings = load_settings({"AE_ENV": "test", "AE_CONSOLE": value}, dotenv=None)
    assert settings.console is expected


def test_ae_console_refuses_other_words() -> None:
    with pytest.raises(SettingsError, match="AE_CONSOLE"):
        load_settings({"AE_ENV": "test", "AE_CONSOLE": "maybe"}, dotenv=None)
    assert Settings().console is True
