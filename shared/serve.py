"""Serving an HTTP service's ASGI app with uvicorn, exiting 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import uvicorn


async def serve(app: Any, host: str, port: int) -> None:
    # uvloop + httptools, no access log.
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http="httptools",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=10,
            lifespan="on",
        )
    )
    # uvicorn re-raises the signal after its graceful shutdown, so the process
    # would die "by SIGTERM"; the SPEC wants exit 0, so the handlers are ours.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await server.serve()
