"""``python -m services.click_recorder``: drain ``CLICKS`` into PostgreSQL."""

from __future__ import annotations

import contextlib

from services.click_recorder.partitions import Partitions
from services.click_recorder.recorder import ClickRecorder
from services.click_recorder.settings import Settings
from shared import db, logs, roster
from shared.contracts import Click
from shared.http import checks
from shared.jetstream import bus, topology
from shared.jetstream.loops import Loops
from shared.jetstream.rescue import rescue_worker
from shared.jetstream.worker import Worker, json_payload
from shared.jetstream.yielding import BusyGateways
from shared.runner import run_service, serve_worker
from shared.settings import load_or_exit


async def run(settings: Settings) -> None:
    consumer = topology.CLICK_RECORDER
    # Each resource is entered as it is acquired, so a start that fails
    # halfway releases what it had; on the way out the busy signal's
    # subscription ends, NATS drains, then the pool closes.
    async with contextlib.AsyncExitStack() as stack:
        pool = await db.create_pool(
            settings.common.database_url, max_size=max(settings.worker.workers, 1) + 2
        )
        stack.push_async_callback(pool.close)
        nc = await bus.service_connection(stack, settings.common, roster.CLICK_RECORDER)
        js = nc.jetstream()
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
        await serve_worker(
            Loops(
                roster.CLICK_RECORDER.label,
                [worker.run] * settings.worker.workers + [rescue.run, partitions.loop()],
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
    settings = load_or_exit(Settings, roster.CLICK_RECORDER.name)
    logs.configure(roster.CLICK_RECORDER.label, settings.common)
    run_service(run(settings))


if __name__ == "__main__":
    main()
