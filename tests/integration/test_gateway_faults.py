"""The gateway when NATS goes away: the spool keeps redirects answering."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
from nats.errors import NoRespondersError
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import ServiceUnavailableError

from services.link.app import build
from services.link.settings import Settings
from shared.cli.servers import NatsServer
from shared.contracts import Click
from shared.jetstream import bus, topology
from shared.settings import Common
from tests.conftest import reset_jetstream
from tests.harness import eventually, serve


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A NATS server of the test's own, to stop and start; provisioned."""
    nats = NatsServer(tmp_path / "nats").start()
    try:
        nc = await bus.connect(nats.url, "setup", forever=False)
        await reset_jetstream(nc)
        await nc.drain()
        yield nats
    finally:
        nats.stop()


def settings_for(nats: NatsServer, db_url: str, spool: Path, max_bytes: int) -> Settings:
    return Settings(
        # These tests are about the spool; keys are tested in test_access.
        common=Common(
            nats_url=nats.url, database_url=db_url, public_url="http://sho.rt", auth=False
        ),
        click_publish_timeout=0.5,
        spool_dir=str(spool),
        spool_max_bytes=max_bytes,
    )


async def stored_click_ids(url: str) -> list[str]:
    """Every click id in CLICKS. Right after a stream change (a new replica
    count, a restarted server) JetStream may answer 503 for a moment while
    it elects a leader: that is waited out, not read as an empty stream."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return await _click_ids(url)
        except (ServiceUnavailableError, NoRespondersError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # wait-ok: a leader election, polled with a deadline


async def _click_ids(url: str) -> list[str]:
    nc = await bus.connect(url, "check", forever=False)
    try:
        # No acks: an ephemeral consumer that waits for them stops at 1,000.
        sub = await nc.jetstream().pull_subscribe(
            "clicks.>",
            durable=None,
            stream=topology.CLICKS,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE),
        )
        # As many as the stream holds: a fetch that times out under load
        # (tests run two at a time) must not read as the end of the stream.
        held = (await nc.jetstream().stream_info(topology.CLICKS)).state.messages
        ids: list[str] = []
        deadline = time.monotonic() + 15
        while len(ids) < held and time.monotonic() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                msgs = await sub.fetch(min(100, held - len(ids)), timeout=1.0)
                ids += [msgspec.json.decode(m.data, type=Click).id for m in msgs]
        return ids
    finally:
        # Not drain(): it waits out nats-py's 30 s drain timeout on the
        # ephemeral pull subscription.
        await nc.close()


async def test_nats_outage_spools_then_replays_in_order(
    own_nats: NatsServer, tmp_path: Path, db_url: str
) -> None:
    nats, spool = own_nats, tmp_path / "spool"
    served: list[str] = []
    settings = settings_for(nats, db_url, spool, 1 << 20)
    async with serve(build(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        created = await client.post(
            "/api/links", json={"url": "https://example.com/o", "code": "outage"}
        )
        assert created.status_code == 201

        async def redirect() -> None:
            r = await client.get("/outage")
            assert r.status_code == 302
            served.append(r.headers["x-request-id"])

        await redirect()
        nats.stop()
        for _ in range(50):  # redirects keep answering from the in-process map
            await redirect()
        assert sum(1 for _ in spool.glob("*.log")) >= 1
        metrics = (await client.get("/metrics")).text
        assert "linkflow_spool_records 50.0" in metrics
        nats.start()

        async def replayed() -> bool:
            return "linkflow_spool_records 0.0" in (await client.get("/metrics")).text

        await eventually(replayed, 20, "the spool replayed")
        await redirect()
    ids = await stored_click_ids(nats.url)
    # Every served click is in the stream once, the spooled ones in order.
    assert ids == served
    assert list(spool.glob("*.log")) == []


async def test_spool_survives_a_gateway_restart(
    own_nats: NatsServer, tmp_path: Path, db_url: str
) -> None:
    nats, spool = own_nats, tmp_path / "spool"
    settings = settings_for(nats, db_url, spool, 1 << 20)
    served: list[str] = []
    async with serve(build(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/api/links", json={"url": "https://example.com/r", "code": "restart"})
        assert (await client.get("/restart")).status_code == 302  # warm the map
        served.append("warm")
        nats.stop()
        for _ in range(10):
            r = await client.get("/restart")
            assert r.status_code == 302
            served.append(r.headers["x-request-id"])
    # The gateway stopped with ten clicks spooled; NATS comes back, and so
    # does a new gateway process on the same spool.
    nats.start()
    async with serve(build(settings)) as url, httpx.AsyncClient(base_url=url) as client:

        async def replayed() -> bool:
            return "linkflow_spool_records 0.0" in (await client.get("/metrics")).text

        await eventually(replayed, 20, "the previous run's spool replayed")
    ids = await stored_click_ids(nats.url)
    assert ids[1:] == served[1:]


async def test_full_spool_answers_503(own_nats: NatsServer, tmp_path: Path, db_url: str) -> None:
    nats = own_nats
    settings = settings_for(nats, db_url, tmp_path / "spool", 1000)
    async with serve(build(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/api/links", json={"url": "https://example.com/f", "code": "full"})
        assert (await client.get("/full")).status_code == 302
        nats.stop()
        statuses = [(await client.get("/full")).status_code for _ in range(10)]
        # A click is a few hundred bytes: a 1000-byte spool takes a couple.
        assert statuses[0] == 302
        assert statuses[-1] == 503
        r = await client.get("/full")
        assert r.headers["content-type"] == "application/problem+json"
