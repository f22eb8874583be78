"""``python -m services.click_recorder``: drain ``CLICKS`` into PostgreSQL."""

from __future__ import annotations

import uvloop

from services.click_recorder.recorder import ClickRecorder
from services.click_recorder.settings import Settings
from shared import bus, checks, db, logs, topology, workerapp
from shared.contracts import Click
from shared.rescue import rescue_worker
from shared.settings import load_or_exit
from shared.worker import Worker, json_payload


async def run(settings: Settings) -> None:
    consumer = topology.CLICK_RECORDER
    nc = await bus.connect(
        settings.common.nats_url,
        "click-recorder",
        creds=settings.common.nats_creds,
        user="click_recorder",
    )
    js = nc.jetstream()
    pool = await db.create_pool(
        settings.common.database_url, max_size=max(settings.worker.workers, 1) + 2
    )
    recorder = ClickRecorder(pool)
    worker = Worker(nc, consumer, settings.worker, json_payload(Click), recorder.handle)
    rescue = rescue_worker(nc, consumer, settings.worker)
    try:
        await workerapp.serve(
            "click-recorder",
            settings.port,
            {
                "nats": checks.nats_connected(nc),
                "database": checks.database(pool),
                "consumer": checks.consumer_exists(js, consumer.stream, consumer.name),
            },
            [worker.run] * settings.worker.workers + [rescue.run],
            host=settings.host,
        )
    finally:
        await bus.close(nc)
        await pool.close()


def main() -> None:
    settings = load_or_exit(Settings, "click_recorder")
    logs.configure("click-recorder", settings.common)
    uvloop.run(run(settings))


if __name__ == "__main__":
    main()
