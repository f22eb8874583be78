"""``linkflow migrate``: tables and JetStream topology, idempotently."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

import asyncpg

from shared import db, roster
from shared.errors import CommandError
from shared.jetstream import bus, topology
from shared.settings import Common, WorkerSettings, load
from shared.urls import redact


async def migrate_all(environ: Mapping[str, str]) -> None:
    common = load(Common, environ=environ)
    # Each service declares its tables as an entry point named for it
    # (pyproject.toml, "linkflow.migrations"), so shared/ imports no service.
    # They run in the roster's order: the gateway's database first.
    order = [s.name for s in roster.ALL]
    declared = entry_points(group="linkflow.migrations")
    for entry in sorted(declared, key=lambda e: (order.index(e.name), e.name)):
        migration: db.Migration = entry.load()
        url, schema = getattr(common, migration.url_setting), migration.sql
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
        await topology.provision(
            nc.jetstream(), common.clicks_max_age, workers, common.stream_replicas
        )
    finally:
        await nc.drain()
