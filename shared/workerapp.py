"""Running a worker service: N fetch loops plus the health/metrics server,
stopped gracefully on SIGTERM (stop fetching, settle the batch in hand,
drain the connection, exit 0)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from starlette.applications import Starlette

from shared.health import Check, routes
from shared.serve import uvicorn_server

log = logging.getLogger(__name__)


async def serve(
    name: str,
    port: int,
    checks: dict[str, Check],
    loops: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]],
    host: str = "127.0.0.1",
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = uvicorn_server(Starlette(routes=routes(checks)), host, port, lifespan="off")
    http = asyncio.create_task(server.serve(), name=f"{name}-http")
    workers = [
        asyncio.create_task(run(stop), name=f"{name}-worker-{i}") for i, run in enumerate(loops)
    ]
    log.info("%s: %d worker loop(s), health on :%d", name, len(workers), port)
    await stop.wait()
    log.info("%s: stopping", name)
    await asyncio.gather(*workers, return_exceptions=True)
    server.should_exit = True
    await http
