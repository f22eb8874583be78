"""The analytics service: HTTP API plus its CLICKS worker loop, one lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypedDict

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from services.analytics import api, ops, pipeline, webapp
from services.analytics.backfill import Backfills
from services.analytics.consumer import ClickAggregator, CreatedCounter
from services.analytics.exporter import exporter
from services.analytics.limits import VisitLimits
from services.analytics.live import LiveClicks
from services.analytics.settings import Settings
from services.analytics.stats import Stats
from services.analytics.store import AnalyticsStore
from shared import db, roster, useragent
from shared.contracts import Click
from shared.geo import Countries
from shared.http import checks, docs, health, openapi, problems
from shared.http.access import Access, Guard
from shared.jetstream import bus, topology
from shared.jetstream.loops import Loops
from shared.jetstream.rescue import rescue_worker
from shared.jetstream.worker import Worker, json_payload
from shared.jetstream.yielding import BusyGateways

# How far back the web app's pipeline chart reaches.
PIPELINE_MINUTES = 10


class State(TypedDict):
    deps: api.Deps


def build(settings: Settings) -> FastAPI:
    # The same bot list as the gateway's, for re-classifying the past.
    if settings.common.bot_agents:
        useragent.add_bot_tokens(settings.common.bot_agents)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        nc = await bus.connect(
            settings.common.nats_url,
            roster.ANALYTICS.label,
            creds=settings.common.nats_creds,
            user=roster.ANALYTICS.name,
        )
        js = nc.jetstream()
        ring = await access.open(js)
        # Two pools, so that no API call can hold a connection the click
        # consumer waits for: the workers' (worker loops, backfill replays,
        # visit limits, the exporter) and the API's, whose statements time out.
        pool = await db.create_pool(
            settings.common.analytics_database_url, max_size=settings.worker.workers + 5
        )
        api_pool = await db.create_pool(
            settings.common.analytics_database_url,
            max_size=settings.api_connections,
            statement_timeout=settings.statement_timeout,
        )
        # GeoIP for clicks without a CDN country header: loaded off the loop.
        store = AnalyticsStore(pool, await asyncio.to_thread(Countries().load))
        limits = VisitLimits(
            await js.key_value(topology.KV_LINKS), await js.key_value(topology.KV_VISITS), store
        )
        limits.start()
        live = LiveClicks(nc, settings.streams, settings.streams_per_key)
        created = await nc.subscribe("links.created", cb=CreatedCounter(store).on_message)
        backfills = Backfills(nc, store, settings.worker, api=api_pool)
        await backfills.resume()
        # Backfills do not hold off: their clicks are older than any yield_lag.
        yields = BusyGateways(settings.yield_lag)
        await yields.start(nc)
        worker = Worker(
            nc,
            topology.ANALYTICS_CLICKS,
            settings.worker,
            json_payload(Click),
            ClickAggregator(store, limits).handle,
            yields,
            linger=settings.linger,
        )
        rescue = rescue_worker(nc, topology.ANALYTICS_CLICKS, settings.worker)
        history = pipeline.History(PIPELINE_MINUTES, settings.pipeline_metrics_every)
        loops = Loops(
            roster.ANALYTICS.label,
            [
                *[worker.run] * settings.worker.workers,
                rescue.run,
                exporter(js, pool, history),
                limits.repairer(settings.visit_repair_every),
            ],
        )
        loops.start()
        app.router.routes.extend(
            health.routes(
                {
                    "nats": checks.nats_connected(nc),
                    # A stranger's /readyz never takes one of the workers' connections.
                    "database": checks.database(api_pool),
                    "keys": access.check,
                    "consumer": checks.consumer(js, topology.ANALYTICS_CLICKS),
                    "visit_limits": checks.synced(limits.synced, "links with visit limits"),
                }
            )
        )
        try:
            stats = Stats(api_pool, settings.statement_timeout)
            yield {"deps": api.Deps(store, js, live, backfills, access, history, yields, stats)}
        finally:
            # Stop taking work, settle the batch in hand, then drain.
            await loops.stop()
            await yields.stop()
            await backfills.stop()
            await live.stop()
            await limits.stop()
            await ring.stop()
            await created.unsubscribe()
            await bus.close(nc)
            await api_pool.close()
            await pool.close()

    app = FastAPI(
        title="linkflow analytics",
        lifespan=lifespan,
        docs_url=None,  # shared.http.docs: Swagger UI from this origin, under the CSP
        openapi_url="/api/openapi.json",
        generate_unique_id_function=openapi.operation_id,
        redoc_url=None,
        exception_handlers=problems.exception_handlers(RequestValidationError),
    )
    app.include_router(api.router)
    app.include_router(ops.router)
    app.router.routes.extend(docs.routes(app.openapi_url, app.title))
    webapp.mount(app, settings.common)
    access = Access.build(api.policy, settings.common, settings.write_rate)
    app.add_middleware(Guard, access=access)
    app.openapi = openapi.documented(app.openapi, api.policy)  # type: ignore[method-assign]
    return app
