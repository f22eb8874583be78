"""In-process services against the session's real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from nats.aio.client import Client

from services.click_recorder.recorder import ClickRecorder
from services.link.app import build
from services.link.settings import Settings as LinkSettings
from shared import db, topology
from shared.contracts import Click
from shared.settings import Common
from shared.worker import Worker
from tests.conftest import TEST_WORKER
from tests.harness import running, serve
from tests.servers import Servers

PUBLIC_URL = "http://sho.rt"


@pytest.fixture
async def gateway(servers: Servers, nc: Client, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = LinkSettings(
        common=Common(nats_url=servers.nats_url, database_url=db_url, public_url=PUBLIC_URL)
    )
    async with serve(build(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


@pytest.fixture
async def recorder(nc: Client, db_url: str) -> AsyncIterator[None]:
    pool = await db.create_pool(db_url)
    worker = Worker(nc, topology.CLICK_RECORDER, TEST_WORKER, Click, ClickRecorder(pool).handle)
    async with running(worker.run):
        yield
    await pool.close()
