"""linkflow on a three-node JetStream cluster, every stream at three
replicas: the node leading CLICKS is SIGKILLed under sustained redirects and
brought back. Redirects keep answering (the gateway's spool covers the
leader election), and every click served is recorded once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.cli.migrate import migrate_all
from shared.cli.process import Process
from shared.cli.servers import NatsServer, free_ports, port_open
from shared.http import keys
from shared.jetstream import bus, topology
from tests.harness import bearer, count, eventually
from tests.integration.test_replicas import cluster  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e


async def migrated(env: dict[str, str]) -> bool:
    # Refused until the cluster has elected its meta leader.
    try:
        await migrate_all(env)
    except Exception:
        return False
    return True


async def test_losing_the_clicks_leader_loses_no_click(
    cluster: list[NatsServer],  # noqa: F811
    db_url: str,
    tmp_path: Path,
) -> None:
    urls = ",".join(node.url for node in cluster)
    env = {
        **os.environ,
        "LINKFLOW_NATS_URL": urls,
        "LINKFLOW_DATABASE_URL": db_url,
        "LINKFLOW_ANALYTICS_DATABASE_URL": db_url,
        "LINKFLOW_STREAM_REPLICAS": "3",
        "LINKFLOW_ACK_WAIT": "2s",
        "LINKFLOW_LOG_LEVEL": "WARNING",
    }
    await eventually(lambda: migrated(env), 60, "migrate on the cluster")
    nc = await bus.connect(urls, "failover", forever=False)
    js = nc.jetstream()
    info = await js.stream_info(topology.CLICKS)
    assert info.config.num_replicas == 3
    key = await keys.create(js, "failover", (keys.ADMIN,))

    gw_port, rec_port = free_ports(2)
    gateway = Process(tmp_path / "link.log")
    gateway.spawn(
        [sys.executable, "-m", "services.link"], {**env, "LINKFLOW_LINK_PORT": str(gw_port)}
    )
    recorder = Process(tmp_path / "recorder.log")
    recorder.spawn(
        [sys.executable, "-m", "services.click_recorder"],
        {**env, "LINKFLOW_CLICK_RECORDER_PORT": str(rec_port)},
    )
    victim: NatsServer | None = None
    try:
        await eventually(
            lambda: asyncio.to_thread(lambda: port_open(gw_port) and port_open(rec_port)),
            60,
            "the gateway and the recorder listening",
        )
        base = f"http://127.0.0.1:{gw_port}"
        async with httpx.AsyncClient(base_url=base, headers=bearer(key), timeout=30) as client:

            async def gateway_ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(gateway_ready, 30, "the gateway ready")
            r = await client.post(
                "/api/links", json={"url": "https://example.com", "code": "failover"}
            )
            assert r.status_code == 201
            statuses: list[int] = []
            slowest = 0.0
            stop_at = time.monotonic() + 12

            async def visitor() -> None:
                nonlocal slowest
                while time.monotonic() < stop_at:
                    started = time.perf_counter()
                    statuses.append((await client.get("/failover")).status_code)
                    slowest = max(slowest, time.perf_counter() - started)

            async def failover() -> None:
                nonlocal victim

                async def loaded() -> bool:
                    return len(statuses) > 300

                await eventually(loaded, 20, "the load under way")
                leader = (await js.stream_info(topology.CLICKS)).cluster.leader
                victim = next(n for n in cluster if n.extra_args[1] == leader)
                victim.kill()

                async def new_leader() -> bool:
                    with contextlib.suppress(Exception):
                        info = await js.stream_info(topology.CLICKS)
                        return bool(info.cluster.leader) and info.cluster.leader != leader
                    return False

                await eventually(new_leader, 30, "a new CLICKS leader")
                victim.start()  # back, on the same store

            await asyncio.gather(failover(), *(visitor() for _ in range(8)))
        assert victim is not None
        assert victim.running
        served = statuses.count(302)
        assert served == len(statuses), {s: statuses.count(s) for s in set(statuses)}

        async def recorded() -> bool:
            return await count(db_url, "SELECT count(*) FROM clicks") >= served

        await eventually(recorded, 60, f"{served} clicks recorded")
        assert await count(db_url, "SELECT count(*) FROM clicks") == served
        assert await count(db_url, "SELECT count(DISTINCT id) FROM clicks") == served
        print(f"failover: {served} redirects, the slowest took {slowest * 1000:.0f} ms")
    finally:
        gateway.stop()
        recorder.stop()
        await nc.close()
