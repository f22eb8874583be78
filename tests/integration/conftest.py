"""In-process services against the session's real servers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from nats.aio.client import Client

from services.analytics.app import build as build_analytics
from services.analytics.migrations import MIGRATION as ANALYTICS
from services.analytics.settings import Settings as AnalyticsSettings
from services.cache_refresher.applier import Applier, decode
from services.click_recorder.app import build as build_recorder
from services.click_recorder.partitions import Partitions
from services.click_recorder.recorder import ClickRecorder
from services.click_recorder.settings import Settings as RecorderSettings
from services.link.app import build
from services.link.settings import Settings as LinkSettings
from shared import db
from shared.contracts import Click
from shared.http import keys
from shared.jetstream import topology
from shared.jetstream.worker import Worker, json_payload
from shared.settings import Common
from tests.conftest import TEST_WORKER
from tests.harness import bearer, running, serve
from tests.servers import Servers

PUBLIC_URL = "http://sho.rt"


@pytest.fixture
async def admin_key(nc: Client) -> str:
    """A key with every scope, in the test's own KV bucket."""
    return await keys.create(nc.jetstream(), "admin", (keys.ADMIN,))


@pytest.fixture
async def gateway(
    servers: Servers, nc: Client, db_url: str, tmp_path: Path, admin_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = LinkSettings(
        common=Common(nats_url=servers.nats_url, database_url=db_url, public_url=PUBLIC_URL),
        spool_dir=str(tmp_path / "spool"),
    )
    async with (
        serve(build(settings)) as url,
        httpx.AsyncClient(base_url=url, headers=bearer(admin_key)) as client,
    ):
        yield client


@pytest.fixture
async def recorder(nc: Client, db_url: str) -> AsyncIterator[None]:
    pool = await db.create_pool(db_url)
    worker = Worker(
        nc,
        topology.CLICK_RECORDER,
        TEST_WORKER,
        json_payload(Click),
        ClickRecorder(pool, Partitions(pool, 0)).handle,
    )
    async with running(worker.run):
        yield
    await pool.close()


@pytest.fixture
async def recorder_api(
    servers: Servers, nc: Client, db_url: str, admin_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The click-recorder as it runs (worker loops and its API, one
    lifespan) in-process; the client carries the admin key."""
    settings = RecorderSettings(
        common=Common(nats_url=servers.nats_url, database_url=db_url, public_url=PUBLIC_URL),
        worker=TEST_WORKER,
    )
    async with (
        serve(build_recorder(settings)) as url,
        httpx.AsyncClient(base_url=url, headers=bearer(admin_key)) as client,
    ):
        yield client


@pytest.fixture
async def cache_refresher(nc: Client, db_url: str) -> AsyncIterator[CacheRefresher]:
    refresher = CacheRefresher(nc, db_url)
    await refresher.start()
    yield refresher
    await refresher.stop()


class CacheRefresher:
    """The cache-refresher's worker loop, in-process, stoppable and restartable."""

    def __init__(self, nc: Client, db_url: str) -> None:
        self._nc = nc
        self._db_url = db_url
        self._running: contextlib.AbstractAsyncContextManager[object] | None = None
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        kv = await self._nc.jetstream().key_value(topology.KV_LINKS)
        # A protected link's update is applied from its row (the hash).
        self._pool = await db.create_pool(self._db_url, max_size=2)
        applier = Applier(kv, self._pool)
        worker = Worker(self._nc, topology.CACHE_REFRESHER, TEST_WORKER, decode, applier.handle)
        self._running = running(worker.run)
        await self._running.__aenter__()

    async def stop(self) -> None:
        if self._running is not None:
            await self._running.__aexit__(None, None, None)
            self._running = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


@pytest.fixture
async def analytics(
    servers: Servers, nc: Client, db_url: str, admin_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The analytics service in-process, its database being the test's database."""
    async with analytics_service(servers, db_url, admin_key) as client:
        yield client


@contextlib.asynccontextmanager
async def analytics_service(
    servers: Servers, db_url: str, admin_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The analytics service in-process (worker loops included) while the
    block runs, for a test that starts it late."""
    await db.migrate(db_url, ANALYTICS.sql)
    settings = AnalyticsSettings(
        common=Common(
            nats_url=servers.nats_url, database_url=db_url, analytics_database_url=db_url
        ),
        worker=TEST_WORKER,
    )
    async with (
        serve(build_analytics(settings)) as url,
        httpx.AsyncClient(base_url=url, headers=bearer(admin_key)) as c,
    ):
        yield c
