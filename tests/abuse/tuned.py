"""The analytics service in-process with some of its settings changed, for
a limit that is cheap to reach only when set small."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx

from services.analytics.app import build
from services.analytics.migrations import MIGRATION
from services.analytics.settings import Settings
from shared import db
from shared.settings import Common
from tests.conftest import TEST_WORKER
from tests.harness import bearer, serve
from tests.servers import Servers


@contextlib.asynccontextmanager
async def analytics(
    servers: Servers, db_url: str, key: str, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    await db.migrate(db_url, MIGRATION.sql)
    common = Common(nats_url=servers.nats_url, database_url=db_url, analytics_database_url=db_url)
    app = build(Settings(common=common, worker=TEST_WORKER, **settings))
    async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=bearer(key)) as c:
        yield c


async def waiting_on_locks(db_url: str, table: str) -> int:
    """Statements of other sessions waiting for a lock, that name ``table``."""
    conn = await asyncpg.connect(db_url)
    try:
        found: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND pid <> pg_backend_pid() "
            "AND query LIKE '%' || $1 || '%'",
            table,
        )
        return found
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def locked(db_url: str, table: str, mode: str) -> AsyncIterator[None]:
    """``table`` locked in ``mode`` while the block runs: statements that
    need a conflicting lock wait, as long as the test says."""
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN {mode} MODE")
            yield
    finally:
        await conn.close()
