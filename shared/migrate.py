"""``linkflow migrate``: tables and JetStream topology, idempotently."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

import asyncpg

from shared import bus, db, topology
from shared.errors import CommandError
from shared.settings import Common, WorkerSettings, load
from shared.urls import redact


async def migrate_all(environ: Mapping[str, str]) -> None:
    common = load(Common, environ=environ)
    # A service that owns a database of its own declares its schema as an
    # entry point named for the setting that holds the database's URL
    # (pyproject.toml, "linkflow.migrations"), so shared/ imports no service.
    schemas = [(common.database_url, db.SCHEMA)]
    for entry in sorted(entry_points(group="linkflow.migrations"), key=lambda e: e.name):
        schemas.append((getattr(common, entry.name), entry.load()))
    for url, schema in schemas:
        try:
            await db.ensure_database(url)
            await db.migrate(url, schema)
        except (ValueError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise CommandError(
                f"cannot migrate the database at {redact(url)}: {exc or type(exc).__name__}"
            ) from None
    workers = {c.service: load(WorkerSettings, c.service, environ) for c in topology.CONSUMERS}
    nc = await bus.connect(
        common.nats_url, "linkflow-migrate", creds=common.nats_creds, forever=False
    )
    try:
        await topology.provision(nc.jetstream(), common.clicks_max_age, workers)
    finally:
        await nc.drain()
