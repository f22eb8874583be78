"""The API docs page: Swagger UI from this origin, out of the pinned
fastapi-offline package, with no inline script (shared/http/docs.py)."""

from __future__ import annotations

import re

import httpx
from starlette.applications import Starlette

from shared.http import csp, docs
from shared.http.access import PUBLIC_PATHS


def test_the_package_still_ships_the_files_the_page_serves() -> None:
    """Fails loudly when a fastapi-offline upgrade moves or drops them."""
    for name in docs.FILES:
        assert (docs.VENDOR / name).stat().st_size > 1000, name
    assert b"SwaggerUIBundle" in (docs.VENDOR / "swagger-ui-bundle.js").read_bytes()[:4000]


async def test_the_page_and_its_files_are_served_under_the_policy() -> None:
    app = Starlette(routes=docs.routes("/api/openapi.json", "linkflow test"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        page = await client.get(docs.PAGE)
        assert page.status_code == 200
        assert page.headers[csp.HEADER] == csp.policy()
        scripts = re.findall(r"<script[^>]*>", page.text)
        assert scripts, page.text
        assert all(" src=" in tag for tag in scripts), scripts  # nothing inline
        assert 'data-openapi="/api/openapi.json"' in page.text
        for path in docs.PATHS:
            r = await client.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].split(";")[0] in (
                "text/html",
                "text/javascript",
                "text/css",
                "image/png",
            ), path
    # Public, as the OpenAPI document is: the page loads them without a key.
    assert docs.PATHS <= PUBLIC_PATHS


def test_the_policy_allows_only_this_origin_and_those_named() -> None:
    policy = csp.policy([csp.origin("https://sho.rt/some/path")])
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self' https://sho.rt"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy
