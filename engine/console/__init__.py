"""`/console`: the admin web console, served from the built files packaged beside this module.

The console is a static single-page app (sources under `console/` at the repository's root,
built by `make console`) that talks only to the public HTTP API. This module serves the
page and its two assets from an allow-list, each with a strict Content-Security-Policy:
scripts, styles and requests from this origin only, no inline code, no `eval`, no frames.
`AE_CONSOLE=false` leaves the routes out.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from engine.errors import NotFoundError
from engine.settings import Settings

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_DIR", "console_routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The built files the page loads, with their media types; nothing else is served.
ASSETS: dict[str, str] = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def console_routes(settings: Settings, *, path: str = "/console") -> list[BaseRoute]:
    """`GET {path}` (redirect), `GET {path}/` (the page) and `GET {path}/{name}` (assets);
    none when `AE_CONSOLE=false`."""
    if not settings.console:
        return []

    async def redirect(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}{path}/", status_code=307, headers=HEADERS)

    async def page(request: Request) -> Response:
        return FileResponse(
            STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFoundError(f"No console asset {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=media_type, headers=HEADERS)

    return [
        Route(path, redirect, methods=["GET"], name="console_redirect"),
        Route(path + "/", page, methods=["GET"], name="console"),
        Route(path + "/{name}", asset, methods=["GET"], name="console_asset"),
    ]
