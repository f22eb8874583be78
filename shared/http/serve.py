"""The HTTP server every service runs (uvicorn), built here; running a
service's process around it (signals, exit status, a worker's loops) is
shared.runner's."""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import uvicorn

from shared.http.heads import BoundedHeads


def uvicorn_server(
    app: Any, host: str, port: int, *, lifespan: Literal["on", "off"] = "on"
) -> uvicorn.Server:
    """uvicorn (httptools with a cap on a request's head, no access log)
    without its signal handlers: it
    re-raises a signal after its graceful shutdown, so the process would die
    "by SIGTERM" where the SPEC wants exit 0, and a worker service must stop
    its loops before its health server. Whoever runs it handles signals
    (shared.runner)."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http=BoundedHeads,
            # No service speaks WebSocket: an Upgrade header is just a header.
            ws="none",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=10,
            lifespan=lifespan,
        )
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return server
