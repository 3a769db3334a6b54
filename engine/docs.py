"""`GET /docs`: Swagger UI over `/openapi.json`, served from the packaged assets (no CDN).

The page and its start-up script are ours; the Swagger UI files come from the installed
`swagger_ui_bundle` package and are served under `/docs/assets/` from an allow-list, so
nothing else in the package directory (its demo `index.html`) is reachable.
"""

from __future__ import annotations

import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from engine.errors import NotFoundError

__all__ = ["ASSETS", "docs_response", "docs_routes", "swagger_ui_dir"]

#: Files of the Swagger UI package the page loads, with their media types.
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
INIT_SCRIPT = "aether-docs.js"
ASSET_CACHE = "public, max-age=86400"

# Kept out of the HTML so a Content-Security-Policy of `script-src 'self'` still works;
# the document URL travels in a data attribute of the page.
_INIT_JS = """\
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""

_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" type="image/png" sizes="32x32" href="{assets}/favicon-32x32.png">
<link rel="icon" type="image/png" sizes="16x16" href="{assets}/favicon-16x16.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/{init}"></script>
</body>
</html>
"""


def swagger_ui_dir() -> Path:
    """The directory of the installed Swagger UI distribution."""
    import swagger_ui_bundle

    return Path(str(swagger_ui_bundle.swagger_ui_path))


def docs_response(
    *,
    openapi_url: str = "/openapi.json",
    assets_url: str = "/docs/assets",
    title: str = "Aether API",
) -> HTMLResponse:
    """The HTML page: Swagger UI loaded from `assets_url`, pointed at `openapi_url`."""
    page = _PAGE.format(
        title=html.escape(title),
        assets=html.escape(assets_url, quote=True),
        openapi_url=html.escape(openapi_url, quote=True),
        init=INIT_SCRIPT,
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


def docs_routes(
    *, path: str = "/docs", openapi_url: str = "/openapi.json", title: str = "Aether API"
) -> list[BaseRoute]:
    """`GET {path}` (the page) and `GET {path}/assets/{name}` (the allowed files).

    URLs in the page carry the ASGI `root_path`, so the app works behind a path prefix.
    """
    directory = swagger_ui_dir()

    async def page(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        return docs_response(
            openapi_url=root + openapi_url, assets_url=f"{root}{path}/assets", title=title
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name == INIT_SCRIPT:
            return Response(
                _INIT_JS,
                media_type="text/javascript; charset=utf-8",
                headers={"Cache-Control": ASSET_CACHE},
            )
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFoundError(f"No documentation asset {name!r}")
        return FileResponse(
            directory / name, media_type=media_type, headers={"Cache-Control": ASSET_CACHE}
        )

    return [
        Route(path, page, methods=["GET"], name="docs"),
        Route(path + "/assets/{name}", asset, methods=["GET"], name="docs_asset"),
    ]
