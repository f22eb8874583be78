"""The gateway when NATS goes away and comes back."""

from __future__ import annotations

from pathlib import Path

import httpx

from services.link.app import build
from services.link.settings import Settings
from shared import bus
from shared.embedded import NatsServer
from shared.settings import Common
from tests.conftest import reset_jetstream
from tests.harness import eventually, serve


async def test_nats_outage_gives_503_then_recovers(tmp_path: Path, db_url: str) -> None:
    nats = NatsServer(tmp_path / "nats").start()
    try:
        nc = await bus.connect(nats.url, "setup", forever=False)
        await reset_jetstream(nc)
        sub = await nc.jetstream().pull_subscribe("clicks.>", durable=None, stream="CLICKS")
        settings = Settings(
            common=Common(nats_url=nats.url, database_url=db_url, public_url="http://sho.rt"),
            click_publish_timeout=0.5,
        )
        async with serve(build(settings)) as url, httpx.AsyncClient(base_url=url) as client:
            created = await client.post(
                "/api/links", json={"url": "https://example.com/o", "code": "outage"}
            )
            assert created.status_code == 201
            assert (await client.get("/outage")).status_code == 302
            nats.stop()
            # No click can be stored: the visitor gets a clear 503, not a
            # redirect whose click would be lost.
            r = await client.get("/outage")
            assert r.status_code == 503
            assert r.headers["content-type"] == "application/problem+json"
            nats.start()

            async def redirects_again() -> bool:
                return (await client.get("/outage")).status_code == 302

            await eventually(redirects_again, 20, "redirects after NATS returned")
        stored = await sub.fetch(10, timeout=5)
        # The first click, and at least the one that succeeded after the
        # outage, are in the stream with their ids; none twice.
        ids = [m.headers["Nats-Msg-Id"] for m in stored if m.headers]
        assert len(ids) >= 2
        assert len(set(ids)) == len(ids)
        await nc.drain()
    finally:
        nats.stop()
