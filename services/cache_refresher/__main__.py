"""``python -m services.cache_refresher``: keep KV ``links`` in step with PostgreSQL."""

from __future__ import annotations

import asyncio

import uvloop

from services.cache_refresher import reconcile
from services.cache_refresher.applier import Applier, decode
from services.cache_refresher.settings import Settings
from shared import bus, checks, db, logs, topology, workerapp
from shared.rescue import rescue_worker
from shared.settings import load_or_exit
from shared.worker import Worker


async def run(settings: Settings) -> None:
    consumer = topology.CACHE_REFRESHER
    nc = await bus.connect(
        settings.common.nats_url,
        "cache-refresher",
        creds=settings.common.nats_creds,
        user="cache_refresher",
    )
    js = nc.jetstream()
    kv = await js.key_value(topology.KV_LINKS)
    pool = await db.create_pool(settings.common.database_url, max_size=2)
    worker = Worker(nc, consumer, settings.worker, decode, Applier(kv).handle)
    rescue = rescue_worker(nc, consumer, settings.worker)

    async def reconciler(stop: asyncio.Event) -> None:
        await reconcile.run_forever(kv, pool, settings.reconcile_every, stop)

    try:
        await workerapp.serve(
            "cache-refresher",
            settings.port,
            {
                "nats": checks.nats_connected(nc),
                "database": checks.database(pool),
                "consumer": checks.consumer_exists(js, consumer.stream, consumer.name),
            },
            [*[worker.run] * settings.worker.workers, rescue.run, reconciler],
            host=settings.host,
        )
    finally:
        await bus.close(nc)
        await pool.close()


def main() -> None:
    settings = load_or_exit(Settings, "cache_refresher")
    logs.configure("cache-refresher", settings.common)
    uvloop.run(run(settings))


if __name__ == "__main__":
    main()
