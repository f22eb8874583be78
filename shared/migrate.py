"""``linkflow migrate``: tables and JetStream topology, idempotently."""

from __future__ import annotations

from collections.abc import Mapping

from shared import bus, db, topology
from shared.settings import Common, WorkerSettings, load


async def migrate_all(environ: Mapping[str, str]) -> None:
    common = load(Common, environ=environ)
    for url in (common.database_url, common.analytics_database_url):
        await db.ensure_database(url)
    await db.migrate(common.database_url)
    # The analytics service owns its database; its schema lives with it.
    from services.analytics.schema import SCHEMA as ANALYTICS_SCHEMA

    await db.migrate(common.analytics_database_url, ANALYTICS_SCHEMA)
    workers = {c.service: load(WorkerSettings, c.service, environ) for c in topology.CONSUMERS}
    nc = await bus.connect(common.nats_url, "linkflow-migrate", forever=False)
    try:
        await topology.provision(nc.jetstream(), common.clicks_max_age, workers)
    finally:
        await nc.drain()
