"""Serving an HTTP app with uvicorn, exiting 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any, Literal

import uvicorn


def uvicorn_server(
    app: Any, host: str, port: int, *, lifespan: Literal["on", "off"] = "on"
) -> uvicorn.Server:
    """uvicorn (httptools, no access log) without its signal handlers: it
    re-raises a signal after its graceful shutdown, so the process would die
    "by SIGTERM" where the SPEC wants exit 0, and a worker service must stop
    its loops before its health server. Whoever runs it handles signals."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http="httptools",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=10,
            lifespan=lifespan,
        )
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return server


async def serve(app: Any, host: str, port: int) -> None:
    server = uvicorn_server(app, host, port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await server.serve()
