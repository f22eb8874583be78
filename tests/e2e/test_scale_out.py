"""Workers scaled out: three click-recorders and two analytics processes on
their durable consumers under sustained redirects, one recorder SIGKILLed
mid-load. Every click served is recorded and counted once, and every
process did part of the work."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.cli.migrate import migrate_all
from shared.cli.process import Process
from shared.cli.servers import free_ports, port_open
from shared.http import keys
from shared.jetstream import bus
from tests.harness import bearer, count, eventually
from tests.servers import Servers

pytestmark = pytest.mark.e2e


def acked(port: int, consumer: str) -> float:
    """Messages this process acked, from its own /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    wanted = f'linkflow_worker_messages_total{{consumer="{consumer}",outcome="ack"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted))


async def test_scaled_out_workers_share_the_work_and_survive_a_kill(
    servers: Servers, db_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "LINKFLOW_NATS_URL": servers.nats_url,
        "LINKFLOW_DATABASE_URL": db_url,
        "LINKFLOW_ANALYTICS_DATABASE_URL": db_url,
        # Small batches, so that five processes on two cores each take some,
        # and a short ack wait, so the killed recorder's batch comes back soon.
        "LINKFLOW_BULK_LIMIT": "20",
        "LINKFLOW_ACK_WAIT": "2s",
        "LINKFLOW_LOG_LEVEL": "WARNING",
    }
    await migrate_all(env)  # the consumers get the ack wait above
    nc = await bus.connect(servers.nats_url, "scale-out", forever=False)
    key = await keys.create(nc.jetstream(), "scale-out", (keys.ADMIN,))
    await nc.drain()

    layout = [("link", 1), ("click_recorder", 3), ("analytics", 2), ("cache_refresher", 1)]
    ports = iter(free_ports(sum(n for _, n in layout)))
    procs: dict[str, list[tuple[Process, int]]] = {}
    try:
        for service, n in layout:
            for i in range(n):
                port = next(ports)
                proc = Process(tmp_path / f"{service}-{i}.log")
                proc.spawn(
                    [sys.executable, "-m", f"services.{service}"],
                    {**env, f"LINKFLOW_{service.upper()}_PORT": str(port)},
                )
                procs.setdefault(service, []).append((proc, port))

        def all_listening() -> bool:
            return all(port_open(p) for group in procs.values() for _, p in group)

        await eventually(lambda: asyncio.to_thread(all_listening), 60, "every process listening")
        gateway = f"http://127.0.0.1:{procs['link'][0][1]}"
        async with httpx.AsyncClient(base_url=gateway, headers=bearer(key)) as client:

            async def gateway_ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(gateway_ready, 30, "the gateway ready")
            r = await client.post("/api/links", json={"url": "https://example.com", "code": "wide"})
            assert r.status_code == 201

            served = 0
            victim, victim_port = procs["click_recorder"][1]
            victim_acked = 0.0
            stop_at = time.monotonic() + 8
            killed = False

            async def visitor() -> None:
                nonlocal served
                while time.monotonic() < stop_at:
                    if (await client.get("/wide")).status_code == 302:
                        served += 1

            async def killer() -> None:
                nonlocal killed, victim_acked

                async def working() -> bool:
                    return await asyncio.to_thread(acked, victim_port, "click-recorder") > 0

                await eventually(working, 20, "the victim recorder to ack some clicks")
                victim_acked = await asyncio.to_thread(acked, victim_port, "click-recorder")
                os.kill(victim.pid, signal.SIGKILL)
                killed = True

            await asyncio.gather(killer(), *(visitor() for _ in range(8)))
        assert killed
        assert served > 500

        async def recorded() -> bool:
            return await count(db_url, "SELECT count(*) FROM clicks") >= served

        await eventually(recorded, 60, f"{served} clicks recorded")

        async def counted() -> bool:
            return await count(db_url, "SELECT count(*) FROM counted_clicks") >= served

        await eventually(counted, 60, f"{served} clicks counted")
        total = (
            "SELECT coalesce(sum(count), 0) FROM click_stats WHERE code = 'wide' AND dim = 'total'"
        )
        assert await count(db_url, "SELECT count(*) FROM clicks") == served
        assert await count(db_url, "SELECT count(DISTINCT id) FROM clicks") == served
        assert await count(db_url, "SELECT count(*) FROM counted_clicks") == served
        assert await count(db_url, total) == served

        survivors = [p for p in procs["click_recorder"] if p[0] is not victim]
        shares = {
            "click-recorder": [victim_acked]
            + [await asyncio.to_thread(acked, port, "click-recorder") for _, port in survivors],
            "analytics": [
                await asyncio.to_thread(acked, port, "analytics") for _, port in procs["analytics"]
            ],
        }
        print(f"scale-out: {served} clicks served; acked per process: {shares}")
        assert all(n > 0 for group in shares.values() for n in group), shares
    finally:
        for group in procs.values():
            for proc, _ in group:
                proc.stop()
