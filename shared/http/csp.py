"""The Content-Security-Policy of linkflow's pages (the web app, the API
docs): scripts, styles and fonts from the page's own origin only, no inline
script or style, no framing. A page that needs to call another origin names
it in ``connect``; nothing else may be loaded from anywhere else."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "content-security-policy"


def policy(connect: Iterable[str] = ()) -> str:
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            # data: for icons drawn in CSS; blob: for images the page fetched
            # with the key (the QR code) and shows from memory; https: for a
            # link's social preview image, shown in its card as chat apps will.
            "img-src 'self' data: blob: https:",
            "font-src 'self'",
            " ".join(("connect-src 'self'", *connect)),
            "object-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what a CSP source names."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Guarded:
    """An ASGI app whose every HTTP answer carries the policy ``header``
    (wraps the web app's static files, which set no headers of their own)."""

    def __init__(self, app: ASGIApp, header: str) -> None:
        self._app = app
        self._header = header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = self._header
            await send(message)

        await self._app(scope, receive, sending)
