"""A service whose start fails halfway leaves nothing behind: no connection
still open on the nats-server (its monitoring port's ``/connz`` says), no
task still running. And one that starts and stops leaves nothing either.

Each start fails naturally where it can: the gateway finds no ``salts``
bucket after it connected twice (its own connection and the clicks'),
opened the key ring and started its cache and visit counts; analytics
cannot reach its database when it resumes backfills, after it subscribed,
opened the key ring and started its visit limits; the cache-refresher finds
no ``links`` bucket. The click-recorder has nothing that fails on its own before
it serves: its subscription to ``redirects.busy`` is made to fail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError
from starlette.types import ASGIApp, Message

from services.analytics.app import build as build_analytics
from services.analytics.migrations import MIGRATION as ANALYTICS
from services.analytics.settings import Settings as AnalyticsSettings
from services.cache_refresher import __main__ as cache_refresher
from services.cache_refresher.settings import Settings as RefresherSettings
from services.click_recorder import app as click_recorder
from services.click_recorder.settings import Settings as RecorderSettings
from services.link.app import build as build_gateway
from services.link.settings import Settings as LinkSettings
from shared import db
from shared.cli.servers import NatsServer, free_port
from shared.jetstream import bus, topology
from shared.jetstream.yielding import BusyGateways
from shared.settings import Common
from tests.conftest import TEST_WORKER
from tests.harness import eventually
from tests.servers import Servers

# Nothing listens there: a database that cannot be reached.
NOWHERE = "postgresql://linkflow@127.0.0.1:9/nowhere"


@dataclass
class Monitored:
    url: str
    monitor: int

    def connections(self) -> list[str]:
        """The names of the clients connected now."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/connz") as r:
            body: dict[str, Any] = json.load(r)
        return [c.get("name", "?") for c in body.get("connections") or []]


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[Monitored]:
    """A nats-server of this test's own, with its monitoring port."""
    monitor = free_port()
    server = NatsServer(tmp_path / "js", extra_args=["-m", str(monitor)]).start()
    try:
        yield Monitored(server.url, monitor)
    finally:
        server.stop()


async def provision(nats: Monitored, *, without: str | None = None) -> None:
    """Streams, consumers and buckets as ``linkflow up`` makes them, but
    ``without`` one bucket; the connection that made them is closed."""
    nc = await bus.connect(nats.url, "tests", forever=False)
    try:
        js = nc.jetstream()
        await topology.provision(js, 3600, {c.service: TEST_WORKER for c in topology.CONSUMERS})
        if without is not None:
            await js.delete_key_value(without)
    finally:
        await nc.close()
    await eventually(lambda: _none(nats), 5, "the provisioning connection to go")


async def _none(nats: Monitored) -> bool:
    return not await asyncio.to_thread(nats.connections)


@contextlib.asynccontextmanager
async def nothing_left(nats: Monitored) -> AsyncIterator[None]:
    """Fails unless, when the block ends, the server has no client and the
    loop no task the block started."""
    before = asyncio.all_tasks()
    yield

    async def clean() -> bool:
        return not await asyncio.to_thread(nats.connections) and not (asyncio.all_tasks() - before)

    # Closed connections and cancelled tasks go within a few loop turns.
    with contextlib.suppress(AssertionError):
        await eventually(clean, 2, "nothing left")
    assert await asyncio.to_thread(nats.connections) == []
    assert {t.get_name() for t in asyncio.all_tasks() - before} == set()


async def lifespan(app: ASGIApp) -> list[Message]:
    """The ASGI lifespan as uvicorn drives it: startup, then shutdown if it
    started. Raises what the startup raised."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    said: list[Message] = []
    inbox.put_nowait({"type": "lifespan.startup"})

    async def send(message: Message) -> None:
        said.append(message)
        if message["type"] == "lifespan.startup.complete":
            inbox.put_nowait({"type": "lifespan.shutdown"})

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await app(scope, inbox.get, send)
    return said


def gateway_settings(nats: Monitored, tmp_path: Path, database_url: str) -> LinkSettings:
    return LinkSettings(
        common=Common(nats_url=nats.url, database_url=database_url, public_url="http://sho.rt"),
        spool_dir=str(tmp_path / "spool"),
    )


async def test_a_gateway_that_fails_halfway_leaves_nothing(nats: Monitored, tmp_path: Path) -> None:
    await provision(nats, without=topology.KV_SALTS)
    async with nothing_left(nats):
        with pytest.raises(BucketNotFoundError):
            await lifespan(build_gateway(gateway_settings(nats, tmp_path, NOWHERE)))


async def test_a_gateway_that_starts_and_stops_leaves_nothing(
    nats: Monitored, tmp_path: Path
) -> None:
    await provision(nats)
    async with nothing_left(nats):
        said = await lifespan(build_gateway(gateway_settings(nats, tmp_path, NOWHERE)))
    assert [m["type"] for m in said] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_analytics_that_fails_halfway_leaves_nothing(nats: Monitored) -> None:
    await provision(nats)
    settings = AnalyticsSettings(
        common=Common(nats_url=nats.url, database_url=NOWHERE, analytics_database_url=NOWHERE),
        worker=TEST_WORKER,
    )
    async with nothing_left(nats):
        with pytest.raises(ConnectionRefusedError):
            await lifespan(build_analytics(settings))


async def test_analytics_that_starts_and_stops_leaves_nothing(
    nats: Monitored, servers: Servers, db_url: str
) -> None:
    await provision(nats)
    await db.migrate(db_url, ANALYTICS.sql)
    settings = AnalyticsSettings(
        common=Common(nats_url=nats.url, database_url=db_url, analytics_database_url=db_url),
        worker=TEST_WORKER,
    )
    async with nothing_left(nats):
        said = await lifespan(build_analytics(settings))
    assert [m["type"] for m in said] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_a_cache_refresher_that_fails_halfway_leaves_nothing(nats: Monitored) -> None:
    await provision(nats, without=topology.KV_LINKS)
    settings = RefresherSettings(
        common=Common(nats_url=nats.url, database_url=NOWHERE), worker=TEST_WORKER
    )
    async with nothing_left(nats):
        with pytest.raises(BucketNotFoundError):
            await cache_refresher.run(settings)


async def test_a_click_recorder_that_fails_halfway_leaves_nothing(
    nats: Monitored, monkeypatch: pytest.MonkeyPatch
) -> None:
    await provision(nats)
    open_then: list[list[str]] = []

    class Failing(BusyGateways):
        async def start(self, nc: Client) -> None:
            await super().start(nc)  # subscribed to redirects.busy, then
            open_then.append(await asyncio.to_thread(nats.connections))
            raise RuntimeError("injected")

    monkeypatch.setattr(click_recorder, "BusyGateways", Failing)
    settings = RecorderSettings(
        common=Common(nats_url=nats.url, database_url=NOWHERE), worker=TEST_WORKER
    )
    async with nothing_left(nats):
        with pytest.raises(RuntimeError, match="injected"):
            await lifespan(click_recorder.build(settings))
    assert open_then == [["click-recorder"]]  # it had connected


async def test_a_click_recorder_that_starts_and_stops_leaves_nothing(
    nats: Monitored, db_url: str
) -> None:
    await provision(nats)
    settings = RecorderSettings(common=Common(nats_url=nats.url, database_url=db_url))
    async with nothing_left(nats):
        said = await lifespan(click_recorder.build(settings))
    assert [m["type"] for m in said] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
