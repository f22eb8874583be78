"""``python -m services.click_recorder``: drain ``CLICKS`` into PostgreSQL."""

from __future__ import annotations

from services.click_recorder.partitions import Partitions
from services.click_recorder.recorder import ClickRecorder
from services.click_recorder.settings import Settings
from shared import db, logs, roster
from shared.contracts import Click
from shared.http import checks
from shared.http.serve import run_service, serve_worker
from shared.jetstream import bus, topology
from shared.jetstream.loops import Loops
from shared.jetstream.rescue import rescue_worker
from shared.jetstream.worker import Worker, json_payload
from shared.jetstream.yielding import BusyGateways
from shared.settings import load_or_exit


async def run(settings: Settings) -> None:
    consumer = topology.CLICK_RECORDER
    nc = await bus.connect(
        settings.common.nats_url,
        roster.CLICK_RECORDER.label,
        creds=settings.common.nats_creds,
        user=roster.CLICK_RECORDER.name,
    )
    js = nc.jetstream()
    pool = await db.create_pool(
        settings.common.database_url, max_size=max(settings.worker.workers, 1) + 2
    )
    partitions = Partitions(pool, settings.retention)
    recorder = ClickRecorder(pool, partitions)
    yields = BusyGateways(settings.yield_lag)
    await yields.start(nc)
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
    try:
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
    finally:
        await yields.stop()
        await bus.close(nc)
        await pool.close()


def main() -> None:
    settings = load_or_exit(Settings, roster.CLICK_RECORDER.name)
    logs.configure(roster.CLICK_RECORDER.label, settings.common)
    run_service(run(settings))


if __name__ == "__main__":
    main()
