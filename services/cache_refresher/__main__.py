"""``python -m services.cache_refresher``: keep KV ``links`` in step with PostgreSQL."""

from __future__ import annotations

import contextlib

from services.cache_refresher import reconcile, refresh
from services.cache_refresher.applier import Applier, decode
from services.cache_refresher.settings import Settings
from shared import db, logs, roster
from shared.http import checks
from shared.jetstream import bus, topology
from shared.jetstream.loops import Loops
from shared.jetstream.rescue import rescue_worker
from shared.jetstream.worker import Worker
from shared.runner import run_service, serve_worker
from shared.settings import load_or_exit


async def run(settings: Settings) -> None:
    consumer = topology.CACHE_REFRESHER
    # Each resource is entered as it is acquired, so a start that fails
    # halfway releases what it had; on the way out NATS drains, then the
    # pool closes.
    async with contextlib.AsyncExitStack() as stack:
        pool = await db.create_pool(settings.common.database_url, max_size=2)
        stack.push_async_callback(pool.close)
        nc = await bus.service_connection(stack, settings.common, roster.CACHE_REFRESHER)
        js = nc.jetstream()
        kv = await js.key_value(topology.KV_LINKS)
        worker = Worker(nc, consumer, settings.worker, decode, Applier(kv, pool).handle)
        rescue = rescue_worker(nc, consumer, settings.worker)
        reconciler = reconcile.reconciler(kv, pool, settings.reconcile_every)
        # A links.* dead letter's replay (analytics asks).
        responder = refresh.responder(nc, kv, pool)
        await serve_worker(
            Loops(
                roster.CACHE_REFRESHER.label,
                [*[worker.run] * settings.worker.workers, rescue.run, reconciler, responder],
            ),
            {
                "nats": checks.nats_connected(nc),
                "database": checks.database(pool),
                "consumer": checks.consumer(js, consumer),
            },
            settings.host,
            settings.port,
        )


def main() -> None:
    settings = load_or_exit(Settings, roster.CACHE_REFRESHER.name)
    logs.configure(roster.CACHE_REFRESHER.label, settings.common)
    run_service(run(settings))


if __name__ == "__main__":
    main()
