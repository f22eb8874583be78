"""``python -m services.link``: the gateway on ``LINKFLOW_LINK_PORT`` (8080)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn
import uvloop

from services.link.app import build
from services.link.settings import Settings
from shared.settings import load


async def serve(settings: Settings) -> None:
    # uvloop + httptools and no access log: the redirect is the hot path.
    server = uvicorn.Server(
        uvicorn.Config(
            build(settings),
            host=settings.host,
            port=settings.port,
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


def main() -> None:
    settings = load(Settings, "link")
    logging.basicConfig(
        level=settings.common.log_level,
        format="%(asctime)s link %(levelname)s %(name)s: %(message)s",
    )
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
