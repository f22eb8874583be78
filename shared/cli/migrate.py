"""``linkflow migrate``: tables, each service's database role and its rights,
and the JetStream topology, idempotently."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Final

import asyncpg

from shared import db, roster
from shared.cli import roles
from shared.errors import CommandError
from shared.jetstream import bus, topology
from shared.settings import Common, WorkerSettings, load
from shared.urls import redact


def migrations() -> list[db.Migration]:
    """Each service declares its tables as an entry point named for it
    (pyproject.toml, "linkflow.migrations"), so shared/ imports no service.
    They run in the roster's order: the gateway's database first."""
    order = [s.name for s in roster.ALL]
    declared = entry_points(group="linkflow.migrations")
    return [entry.load() for entry in sorted(declared, key=lambda e: (order.index(e.name), e.name))]


# The settings naming a database a service keeps to itself (roles.own_database).
OWN_DATABASES: Final = {roster.WEBHOOKS.name: "webhooks_database_url"}


def own_database(common: Common, service: str) -> str:
    """The URL of the database ``service`` keeps to itself: its setting, or
    unset, ``<main database>_webhooks`` on the main database's server."""
    given: str = getattr(common, OWN_DATABASES[service])
    if given:
        return given
    main = db.database_name(common.database_url) or "linkflow"
    return db.with_database(common.database_url, f"{main}_{service}")


def database_settings(service: str) -> list[str]:
    """The settings (of :class:`Common`) naming the databases where
    ``service``'s role has rights: the URLs it needs, with its role."""
    found = [m.url_setting for m in migrations() for s, _ in m.grants if s == service]
    if service in OWN_DATABASES:
        found.append(OWN_DATABASES[service])
    return list(dict.fromkeys(found))


async def migrate_all(environ: Mapping[str, str]) -> None:
    common = load(Common, environ=environ)
    grants: dict[str, list[tuple[str, str]]] = {}
    for migration in migrations():
        url = getattr(common, migration.url_setting)
        grants.setdefault(url, []).extend(migration.grants)
        with _database(url):
            await db.ensure_database(url)
            await db.migrate(url, migration.sql)
    # After every table of a database exists: a role's rights there are
    # revoked and granted again in one transaction, so it never holds more
    # than its migration says, and never less while services run.
    passwords = roles.passwords(environ)
    for url, granted in grants.items():
        with _database(url):
            await roles.ensure(url, passwords)
            await db.migrate(url, roles.grants_sql(granted))
    for service in OWN_DATABASES:
        url = own_database(common, service)
        with _database(url):
            await roles.own_database(url, service)
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


@contextlib.contextmanager
def _database(url: str) -> Iterator[None]:
    """A database that cannot be migrated is one line naming it."""
    try:
        yield
    except (ValueError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CommandError(
            f"cannot migrate the database at {redact(url)}: {exc or type(exc).__name__}"
        ) from None
