"""Running a service's process, once for every service: its main coroutine
on uvloop, exiting 0 on SIGTERM or SIGINT. An HTTP service serves its app
(its lifespan starts and stops its loops); a worker service runs its loops
behind its health endpoints. The HTTP server itself: shared.http.serve."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any

import uvloop
from starlette.applications import Starlette

from shared.http.health import Check, routes
from shared.http.serve import uvicorn_server
from shared.jetstream.loops import Loops
from shared.priority import leave_background

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """A service's process: ``main`` on uvloop. A stop signal that comes
    before the service serves ends it at once, with status 0."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _stop_while_starting)
    uvloop.run(main)


def _stop_while_starting(*_: object) -> None:
    # Before its worker loops run or its lifespan has started, a service has
    # answered no request and acked nothing, and it may be waiting for a
    # NATS or PostgreSQL that never answers. (Analytics starts its loops
    # just before its lifespan yields: a batch fetched in that instant is
    # redelivered after the ack wait.) After that, the handlers below stop
    # a service gracefully. A signal during the interpreter's own start,
    # before this is installed, still ends it by the signal.
    log.warning("stopped while starting")
    logging.shutdown()
    os._exit(0)


def _on_stop_signal(handler: Any) -> None:
    """``handler`` on a stop signal, once the service is back at its
    starter's CPU priority: a stop (settling a batch, draining NATS) is
    bounded work that ``linkflow up``'s low priority for a ready worker
    would stretch without bound while a storm keeps the CPUs busy."""
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        try:
            if not leave_background():
                log.info("stopping at nice %d: raising it back needs root", os.nice(0))
        except Exception:  # the stop itself must still happen
            log.exception("could not raise this service's CPU priority for its stop")
        finally:
            handler()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping)


async def serve(app: Any, host: str, port: int) -> None:
    """An HTTP service: its lifespan starts and stops whatever loops it runs."""
    server = uvicorn_server(app, host, port)

    def stop() -> None:
        lifespan = getattr(server, "lifespan", None)  # set once serve() begins
        if lifespan is None or not lifespan.startup_event.is_set():
            _stop_while_starting()  # still in its lifespan's start
        server.should_exit = True  # uvicorn then shuts the lifespan down

    _on_stop_signal(stop)
    await server.serve()


async def serve_worker(loops: Loops, checks: dict[str, Check], host: str, port: int) -> None:
    """A worker service: its loops, and ``/healthz``, ``/readyz`` and
    ``/metrics``. On SIGTERM the loops stop first (no new fetches, the batch
    in hand settled), then the health server; the caller drains NATS after."""
    stop = asyncio.Event()
    _on_stop_signal(stop.set)
    server = uvicorn_server(Starlette(routes=routes(checks)), host, port, lifespan="off")
    http = asyncio.create_task(server.serve(), name=f"{loops.name}-http")
    loops.start()
    log.info("%s: health on :%d", loops.name, port)
    await stop.wait()
    log.info("%s: stopping", loops.name)
    await loops.stop()
    server.should_exit = True
    await http
