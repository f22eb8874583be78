"""The click-recorder: its CLICKS worker loops and, on the same port, its
HTTP API (the raw clicks' export) beside ``/healthz``, ``/readyz`` and
``/metrics``; one lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final, TypedDict

from fastapi import FastAPI

from services.click_recorder import api
from services.click_recorder.export import Exports
from services.click_recorder.partitions import Partitions
from services.click_recorder.recorder import ClickRecorder
from services.click_recorder.settings import Settings
from shared import db, roster
from shared.contracts import Click
from shared.http import checks, health
from shared.http.access import Access
from shared.http.apps import service_app
from shared.jetstream import bus, topology
from shared.jetstream.loops import Loops
from shared.jetstream.rescue import rescue_worker
from shared.jetstream.worker import Worker, json_payload
from shared.jetstream.yielding import BusyGateways
from shared.settings import Rate
from shared.urls import default_host

# Its API takes no write call (the policy gives every other /api path to
# admin, and none exists): the write rate limits nothing here.
NO_WRITES: Final = Rate(1.0)


class State(TypedDict):
    deps: api.Deps


def build(settings: Settings) -> FastAPI:
    consumer = topology.CLICK_RECORDER

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        # Each resource is entered as it is acquired, so a start that fails
        # halfway releases what it had; the stop releases all, in reverse.
        async with contextlib.AsyncExitStack() as stack:
            pool = await db.create_pool(
                settings.common.database_url, max_size=max(settings.worker.workers, 1) + 2
            )
            stack.push_async_callback(pool.close)
            # The exports' own pool, one connection an export: no export
            # holds a connection the worker loops wait for.
            export_pool = await db.create_pool(
                settings.common.database_url,
                max_size=settings.exports,
                statement_timeout=settings.export_timeout,
            )
            stack.push_async_callback(export_pool.close)
            nc = await bus.service_connection(stack, settings.common, roster.CLICK_RECORDER)
            js = nc.jetstream()
            ring = await access.open(js)
            stack.push_async_callback(ring.stop)
            partitions = Partitions(pool, settings.retention)
            recorder = ClickRecorder(pool, partitions)
            yields = BusyGateways(settings.yield_lag)
            await yields.start(nc)
            stack.push_async_callback(yields.stop)
            worker = Worker(
                nc,
                consumer,
                settings.worker,
                json_payload(Click),
                recorder.handle,
                yields,
                linger=settings.linger,
            )
            rescue = rescue_worker(nc, consumer, settings.worker)
            loops = Loops(
                roster.CLICK_RECORDER.label,
                [worker.run] * settings.worker.workers + [rescue.run, partitions.loop()],
            )
            loops.start()
            stack.push_async_callback(loops.stop)
            app.router.routes.extend(
                health.routes(
                    {
                        "nats": checks.nats_connected(nc),
                        "database": checks.database(pool),
                        "consumer": checks.consumer(js, consumer),
                        "keys": access.check,
                    }
                )
            )
            exports = Exports(export_pool, settings.exports, settings.export_timeout)
            yield {"deps": api.Deps(exports, default_host(settings.common.public_url))}

    access = Access.build(api.policy, settings.common, NO_WRITES)
    # The web app downloads raw clicks from a browser (its export button).
    return service_app(
        "linkflow click-recorder", lifespan, [api.router], access, app_url=settings.common.app_url
    )
