"""The analytics service: HTTP API plus its CLICKS worker loop, one lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypedDict

from fastapi import FastAPI

from services.analytics import api, ops, pipeline, webapp
from services.analytics.backfill import Backfills
from services.analytics.consumer import ClickAggregator, CreatedCounter
from services.analytics.exporter import exporter
from services.analytics.limits import VisitLimits
from services.analytics.live import LiveClicks
from services.analytics.orphans import OrphanCounts
from services.analytics.settings import Settings
from services.analytics.stats import Stats
from services.analytics.store import AnalyticsStore
from shared import db, roster, useragent
from shared.contracts import Click
from shared.geo import Countries
from shared.http import checks, health
from shared.http.access import Access
from shared.http.apps import service_app
from shared.jetstream import bus, topology
from shared.jetstream.loops import Loops
from shared.jetstream.rescue import rescue_worker
from shared.jetstream.worker import Worker, json_payload
from shared.jetstream.yielding import BusyGateways
from shared.urls import default_host

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
        # Each resource is entered as it is acquired, so a start that fails
        # halfway releases what it had, and a stop releases all, in reverse:
        # the order below is the shutdown's, read from the bottom up.
        async with contextlib.AsyncExitStack() as stack:
            # Two pools, so that no API call can hold a connection the click
            # consumer waits for: the workers' (worker loops, backfill replays,
            # visit limits, the exporter) and the API's, whose statements time
            # out. Closed last; min_size 0, so nothing connects yet.
            pool = await db.create_pool(
                settings.common.analytics_database_url, max_size=settings.worker.workers + 5
            )
            stack.push_async_callback(pool.close)
            api_pool = await db.create_pool(
                settings.common.analytics_database_url,
                max_size=settings.api_connections,
                statement_timeout=settings.statement_timeout,
            )
            stack.push_async_callback(api_pool.close)
            nc = await bus.service_connection(stack, settings.common, roster.ANALYTICS)
            js = nc.jetstream()
            # GeoIP for clicks without a CDN country header: loaded off the loop.
            store = AnalyticsStore(pool, await asyncio.to_thread(Countries().load))
            created = await nc.subscribe("links.created", cb=CreatedCounter(store).on_message)
            stack.push_async_callback(created.unsubscribe)
            orphans = OrphanCounts(pool)
            # Unsubscribed first, then the loops stop, then what is held is written.
            stack.push_async_callback(orphans.close)
            orphan_sub = await orphans.subscribe(nc)
            stack.push_async_callback(orphan_sub.unsubscribe)
            ring = await access.open(js)
            stack.push_async_callback(ring.stop)
            limits = VisitLimits(
                await js.key_value(topology.KV_LINKS), await js.key_value(topology.KV_VISITS), store
            )
            limits.start()
            stack.push_async_callback(limits.stop)
            live = LiveClicks(nc, settings.streams, settings.streams_per_key)
            stack.push_async_callback(live.stop)
            backfills = Backfills(nc, store, settings.worker, api=api_pool)
            stack.push_async_callback(backfills.stop)
            await backfills.resume()
            # Backfills do not hold off: their clicks are older than any yield_lag.
            yields = BusyGateways(settings.yield_lag)
            await yields.start(nc)
            stack.push_async_callback(yields.stop)
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
                    orphans.loop(),
                ],
            )
            loops.start()
            stack.push_async_callback(loops.stop)
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
            stats = Stats(
                api_pool, settings.statement_timeout, default_host(settings.common.public_url)
            )
            # On exit the stack stops taking work, settles the batch in hand
            # (the loops), then stops the rest and drains NATS.
            yield {"deps": api.Deps(store, js, live, backfills, access, history, yields, stats)}

    access = Access.build(api.policy, settings.common, settings.write_rate)
    app = service_app("linkflow analytics", lifespan, [api.router, ops.router], access)
    webapp.mount(app, settings.common)
    return app
