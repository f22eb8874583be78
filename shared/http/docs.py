"""The API docs page (``/api/docs``) of every HTTP service: Swagger UI, its
files served from this origin out of the fastapi-offline package (pinned in
requirements.lock) instead of FastAPI's default CDN, and started by a
script file instead of FastAPI's inline one, so that the page runs under
the strict Content-Security-Policy of shared/http/csp.py."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Final

import fastapi_offline
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from shared.http import csp

PAGE: Final = "/api/docs"
# Swagger UI's files as the package ships them (a test fails if an upgrade
# moves them: tests/unit/test_docs.py).
VENDOR: Final = Path(fastapi_offline.__file__).with_name("static")
FILES: Final = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
START: Final = "start.js"
# Every path of the page: public, as the OpenAPI document is (SPEC, "Access").
PATHS: Final = frozenset({PAGE, *(f"{PAGE}/{name}" for name in (*FILES, START))})

# Swagger UI's options as FastAPI's default page sets them.
_START_JS: Final = b"""\
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapi,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""


def routes(openapi_url: str | None, title: str) -> list[BaseRoute]:
    """The page and its files; the service's FastAPI is built with
    ``docs_url=None`` and extends its routes with these."""
    if openapi_url is None:
        raise ValueError("API docs need the OpenAPI document's URL")
    header = {csp.HEADER: csp.policy()}
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} - API docs</title>
<link rel="icon" href="{PAGE}/favicon.png">
<link rel="stylesheet" href="{PAGE}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi="{html.escape(openapi_url)}"></div>
<script src="{PAGE}/swagger-ui-bundle.js"></script>
<script src="{PAGE}/{START}"></script>
</body>
</html>
"""

    async def docs(_: Request) -> Response:
        return HTMLResponse(page, headers=header)

    async def start(_: Request) -> Response:
        return Response(_START_JS, media_type="text/javascript", headers=header)

    def vendored(name: str, media_type: str) -> Route:
        async def serve(_: Request) -> Response:
            return FileResponse(VENDOR / name, media_type=media_type)

        return Route(f"{PAGE}/{name}", serve, methods=["GET", "HEAD"], include_in_schema=False)

    return [
        Route(PAGE, docs, methods=["GET", "HEAD"], include_in_schema=False),
        Route(f"{PAGE}/{START}", start, methods=["GET", "HEAD"], include_in_schema=False),
        *(vendored(name, media_type) for name, media_type in FILES.items()),
    ]
