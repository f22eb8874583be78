"""A million clicks through ``GET /api/clicks`` from the click-recorder as
its own process: the export streams them all while the process's resident
memory stays flat (one chunk held, never the rows), and the recorder keeps
recording the clicks published meanwhile."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from shared.cli.migrate import migrate_all
from shared.cli.process import Process
from shared.cli.servers import free_port
from shared.contracts import encode
from shared.http import keys
from shared.jetstream import bus
from tests.harness import bearer, count, eventually
from tests.integration.test_click_export import bulk, click
from tests.servers import Servers

pytestmark = pytest.mark.e2e

ROWS = 1_000_000
# What the export may add to the recorder's resident memory, at most.
GROWTH = 50 * 2**20


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
async def test_a_million_clicks_stream_in_flat_memory_while_recording_goes_on(
    servers: Servers, db_url: str, tmp_path: Path, fmt: str
) -> None:
    env = {
        **os.environ,
        "LINKFLOW_NATS_URL": servers.nats_url,
        "LINKFLOW_DATABASE_URL": db_url,
        "LINKFLOW_ANALYTICS_DATABASE_URL": db_url,
        "LINKFLOW_LOG_LEVEL": "WARNING",
    }
    await migrate_all(env)
    nc = await bus.connect(servers.nats_url, "export-scale", forever=False)
    key = await keys.create(nc.jetstream(), "exporter", (keys.STATS_READ,))
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    start = end - timedelta(days=7)
    began = time.monotonic()
    await bulk(db_url, ROWS, start, end)
    inserted = time.monotonic() - began
    port = free_port()
    proc = Process(tmp_path / "click_recorder.log")
    proc.spawn(
        [sys.executable, "-m", "services.click_recorder"],
        {**env, "LINKFLOW_CLICK_RECORDER_PORT": str(port)},
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=bearer(key), timeout=120
        ) as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, 60, "the recorder ready")
            memory = psutil.Process(proc.pid)
            at_start = memory.memory_info().rss
            # One small export first, so that what any first call loads is in.
            small = {"from": start.isoformat(), "to": (start + timedelta(minutes=10)).isoformat()}
            assert (await client.get("/api/clicks", params=small)).status_code == 200
            before = memory.memory_info().rss
            window = {"from": start.isoformat(), "to": end.isoformat(), "format": fmt}
            samples: list[int] = []
            published = 0
            done = asyncio.Event()

            async def sample() -> None:
                while not done.is_set():
                    samples.append(memory.memory_info().rss)
                    await asyncio.sleep(0.05)  # wait-ok: a sampling interval, not a wait

            async def publish() -> None:
                nonlocal published
                js = nc.jetstream()
                while not done.is_set():
                    for _ in range(10):
                        c = click("during", datetime.now(UTC))
                        await js.publish(
                            f"clicks.{c.code}", encode(c), headers={"Nats-Msg-Id": c.id}
                        )
                        published += 1
                    await asyncio.sleep(0.05)  # wait-ok: a publishing pace, not a wait

            async def export() -> tuple[int, int]:
                lines = size = 0
                try:
                    async with client.stream("GET", "/api/clicks", params=window) as r:
                        assert r.status_code == 200
                        async for chunk in r.aiter_raw():
                            lines += chunk.count(b"\n")
                            size += len(chunk)
                finally:
                    done.set()
                return lines, size

            began = time.monotonic()
            (lines, size), _, _ = await asyncio.gather(export(), sample(), publish())
            took = time.monotonic() - began
            during = await count(db_url, "SELECT count(*) FROM clicks WHERE code = 'during'")
            after = memory.memory_info().rss

            async def all_recorded() -> bool:
                sql = "SELECT count(*) FROM clicks WHERE code = 'during'"
                return await count(db_url, sql) == published

            await eventually(all_recorded, 30, f"{published} clicks recorded")
        peak = max(samples)
        mib = 2**20
        print(
            f"export of {ROWS:,} clicks: insert {inserted:.1f} s; export {took:.1f} s, "
            f"{size / mib:.0f} MiB of {fmt}; recorder RSS at start {at_start / mib:.1f} MiB, "
            f"before {before / mib:.1f} MiB, peak during {peak / mib:.1f} MiB "
            f"({len(samples)} samples), after {after / mib:.1f} MiB; "
            f"{during}/{published} clicks recorded during the export"
        )
        assert lines == ROWS + (fmt == "csv")  # a line a click, after CSV's header
        assert peak - before < GROWTH, (before, peak)
        assert during > 0
    finally:
        proc.stop()
        await nc.drain()
