"""Backfills that survive a restart, the pipeline view and DLQ operations."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
from nats.aio.client import Client
from prometheus_client import REGISTRY

from services.analytics.backfill import Backfills
from services.analytics.migrations import MIGRATION as ANALYTICS
from services.analytics.payloads import Backfill
from services.analytics.store import AnalyticsStore
from shared import db
from shared.cli.servers import PostgresServer
from shared.contracts import REDIRECTS_BUSY, Click, RedirectsBusy, encode
from shared.geo import Countries
from shared.jetstream import dlq, topology
from shared.settings import WorkerSettings
from tests.conftest import TEST_WORKER
from tests.harness import count, eventually
from tests.integration.test_analytics import human, publish
from tests.servers import Servers


def batches_of(n: int) -> WorkerSettings:
    return msgspec.structs.replace(TEST_WORKER, bulk_limit=n)


async def test_backfill_killed_halfway_resumes_and_finishes(nc: Client, db_url: str) -> None:
    await db.migrate(db_url, ANALYTICS.sql)
    start = datetime.now(UTC) - timedelta(seconds=1)
    await publish(nc, [human("resume") for _ in range(1500)])
    end = datetime.now(UTC) + timedelta(seconds=1)
    pool = await db.create_pool(db_url)
    store = AnalyticsStore(pool, Countries())
    try:
        first = Backfills(nc, store, batches_of(10))
        created = await first.create(start, end)
        assert created.total == 1500

        async def halfway() -> bool:
            state = await first.get(created.id)
            return state is not None and 0 < state.processed < 1500

        await eventually(halfway, what="the backfill to be under way")
        await first.stop()  # the service dies mid-backfill
        stopped = await first.get(created.id)
        assert stopped is not None
        assert stopped.state == "running"
        assert stopped.processed < 1500

        second = Backfills(nc, store, batches_of(200))  # the service restarted
        assert await second.resume() == 1

        async def done() -> bool:
            state = await second.get(created.id)
            return state is not None and state.state == "done"

        await eventually(done, 30, "the resumed backfill to finish")
        finished = await second.get(created.id)
        assert finished is not None
        assert finished.processed == 1500
        assert (
            await count(db_url, "SELECT count(*) FROM counted_clicks WHERE code = 'resume'") == 1500
        )
        assert (
            await count(
                db_url, "SELECT sum(count) FROM click_stats WHERE code = 'resume' AND dim = 'total'"
            )
            == 1500
        )
    finally:
        await pool.close()


async def test_backfill_holds_through_a_database_outage_and_finishes(
    nc: Client, tmp_path: Path
) -> None:
    pg = PostgresServer(tmp_path / "pg", durable=False).start()
    url = pg.url("analytics")
    await db.ensure_database(url)
    await db.migrate(url, ANALYTICS.sql)
    start = datetime.now(UTC) - timedelta(seconds=1)
    await publish(nc, [human("outage") for _ in range(4000)])
    end = datetime.now(UTC) + timedelta(seconds=1)
    pool = await db.create_pool(url)
    backfills = Backfills(nc, AnalyticsStore(pool, Countries()), batches_of(10))
    try:
        created = await backfills.create(start, end)
        consumer = f"backfill-{created.id}"

        async def under_way() -> bool:
            state = await backfills.get(created.id)
            return state is not None and state.processed > 0

        await eventually(under_way, what="the backfill to be under way")
        pg.stop()  # the database goes away mid-backfill

        async def holding() -> bool:
            held = REGISTRY.get_sample_value(
                "linkflow_worker_messages_total", {"consumer": consumer, "outcome": "held"}
            )
            return bool(held)

        await eventually(holding, what="the backfill to hold its batch")
        pg.start()

        async def done() -> Backfill | None:
            state = await backfills.get(created.id)
            return state if state is not None and state.state != "running" else None

        finished = await eventually(done, 60, "the backfill to finish")
        assert finished.state == "done", finished
        assert finished.processed == 4000
        assert await count(url, "SELECT count(*) FROM counted_clicks WHERE code = 'outage'") == 4000
        total = "SELECT sum(count) FROM click_stats WHERE code = 'outage' AND dim = 'total'"
        assert await count(url, total) == 4000
    finally:
        await backfills.stop()
        await pool.close()
        pg.stop()


async def test_cancelled_backfill_stops(nc: Client, db_url: str) -> None:
    await db.migrate(db_url, ANALYTICS.sql)
    start = datetime.now(UTC) - timedelta(seconds=1)
    await publish(nc, [human("cancel") for _ in range(1000)])
    pool = await db.create_pool(db_url)
    try:
        backfills = Backfills(nc, AnalyticsStore(pool, Countries()), batches_of(5))
        created = await backfills.create(start, datetime.now(UTC) + timedelta(seconds=1))
        cancelled = await backfills.cancel(created.id)
        assert cancelled is not None
        assert cancelled.state == "cancelled"
        assert cancelled.processed < 1000
        assert await backfills.resume() == 0
    finally:
        await pool.close()


async def dead_letter_a_click(nc: Client, click: Click) -> None:
    """Put a click in the DLQ as the recorder would have after MAX_ATTEMPTS."""
    await nc.jetstream().publish(
        "dlq.CLICKS.click-recorder",
        encode(click),
        headers={
            "Nats-Msg-Id": f"CLICKS.click-recorder.{click.id}",
            "Linkflow-Original-Msg-Id": click.id,
            "X-Request-Id": "req-1",
            "Linkflow-Original-Subject": f"clicks.{click.code}",
            "Linkflow-Stream-Seq": "1",
            "Linkflow-Attempts": "5",
            "Linkflow-Error": "Unavailable: database down",
            "Linkflow-First-Failed-At": "2026-01-01T00:00:00.000Z",
            "Linkflow-Failed-At": "2026-01-01T00:01:00.000Z",
        },
    )


async def test_dlq_list_replay_discard(
    analytics: httpx.AsyncClient, nc: Client, recorder: None, db_url: str
) -> None:
    await nc.jetstream().publish("clicks.garbage", b"not json at all")
    saved = human("saved")
    await dead_letter_a_click(nc, saved)

    async def listed() -> list[dict[str, object]] | None:
        items = (await analytics.get("/api/dlq")).json()["items"]
        return items if len(items) == 3 else None  # garbage for analytics and recorder, + 1

    items = await eventually(listed, what="three dead letters")
    by_consumer = sorted(str(i["consumer"]) for i in items)
    assert by_consumer == ["analytics", "click-recorder", "click-recorder"]
    only_recorder = await analytics.get("/api/dlq", params={"consumer": "click-recorder"})
    assert len(only_recorder.json()["items"]) == 2

    pipeline = (await analytics.get("/api/pipeline")).json()
    assert pipeline["dlq"] == {"analytics": 1, "click-recorder": 2}
    names = {c["consumer"]: c for c in pipeline["consumers"]}
    assert set(names) == {c.name for c in topology.CONSUMERS}
    assert {
        "pending",
        "ack_pending",
        "redelivered",
        "lag_seconds",
        "last_active",
        "dlq_depth",
    } <= names["click-recorder"].keys()

    saved_seq = next(i["seq"] for i in items if "saved" in str(i["payload"]))
    r = await analytics.post(f"/api/dlq/{saved_seq}/replay")
    assert r.status_code == 200
    await eventually(
        lambda: count(db_url, "SELECT count(*) FROM clicks WHERE id = $1", saved.id),
        what="the replayed click recorded",
    )
    garbage = (await analytics.get("/api/dlq")).json()["items"]
    assert len(garbage) == 2
    for item in garbage:
        assert (await analytics.delete(f"/api/dlq/{item['seq']}")).status_code == 204
    assert (await analytics.get("/api/dlq")).json()["items"] == []
    assert (await analytics.delete(f"/api/dlq/{saved_seq}")).status_code == 404
    assert (await analytics.post(f"/api/dlq/{saved_seq}/replay")).status_code == 404


async def test_dlq_replay_all_by_consumer(
    analytics: httpx.AsyncClient, nc: Client, recorder: None, db_url: str
) -> None:
    clicks = [human("again") for _ in range(3)]
    for c in clicks:
        await dead_letter_a_click(nc, c)
    r = await analytics.post("/api/dlq/replay", params={"consumer": "click-recorder"})
    assert r.json() == {"replayed": 3, "skipped": 0}

    async def recorded() -> bool:
        return await count(db_url, "SELECT count(*) FROM clicks WHERE code = 'again'") == 3

    await eventually(recorded, what="three replayed clicks recorded")
    assert await dlq.list_(nc.jetstream()) == []


def cli(servers: Servers, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LINKFLOW_NATS_URL": servers.nats_url}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "dlq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_dlq_command_line(servers: Servers, nc: Client) -> None:
    for c in [human("cli1"), human("cli2")]:
        await dead_letter_a_click(nc, c)
    listed = await asyncio.to_thread(cli, servers, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    items = msgspec.json.decode(listed.stdout)
    assert [i["consumer"] for i in items] == ["click-recorder", "click-recorder"]
    first, second = items[0]["seq"], items[1]["seq"]
    assert (await asyncio.to_thread(cli, servers, "discard", str(first))).returncode == 0
    replayed = await asyncio.to_thread(cli, servers, "replay", str(second))
    assert replayed.returncode == 0, replayed.stderr
    assert (await asyncio.to_thread(cli, servers, "discard", str(first))).returncode == 1
    assert await dlq.list_(nc.jetstream()) == []
    info = await nc.jetstream().stream_info(topology.CLICKS)
    assert info.state.messages == 1  # the replayed click, back on clicks.cli2
    human_readable = await asyncio.to_thread(cli, servers, "list")
    assert "no dead letters" in human_readable.stdout


async def test_the_pipeline_history_follows_a_backlog(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    """``/api/pipeline/history`` (the web app's lag chart) holds the
    exporter's samples: each consumer's pending and lag, oldest first. A
    backlog on a consumer nobody works on (the recorder is not running
    here) shows up in the samples that follow it."""
    r = await analytics.get("/api/pipeline/history")
    assert r.status_code == 200
    assert r.json()["every"] == 5.0
    for i in range(3):
        await nc.jetstream().publish(f"clicks.hist{i}", encode(human(f"hist{i}")))

    async def backlog_seen() -> dict[str, Any] | None:
        items = (await analytics.get("/api/pipeline/history")).json()["items"]
        last = items[-1] if items else None
        return last if last and last["consumers"]["click-recorder"]["pending"] == 3 else None

    last = await eventually(backlog_seen, 15, "a sample with the recorder's backlog")
    assert set(last["consumers"]) == {c.name for c in topology.CONSUMERS}
    assert last["consumers"]["click-recorder"]["lag_seconds"] > 0
    items = (await analytics.get("/api/pipeline/history")).json()["items"]
    times = [item["ts"] for item in items]
    assert times == sorted(times)


async def test_the_pipeline_says_while_a_gateway_is_busy(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    """Why the lag grows during a spike: ``/api/pipeline`` names the latest
    gateway to say ``redirects.busy`` while its hold lasts, then one whose
    hold still lasts, then that none is busy."""

    async def view() -> dict[str, Any]:
        busy: dict[str, Any] = (await analytics.get("/api/pipeline")).json()["redirects_busy"]
        return busy

    async def named(gateway: str | None) -> bool:
        return (await view())["gateway"] == gateway

    async def say(gateway: str, load: float, hold: float) -> None:
        busy = RedirectsBusy(gateway=gateway, load=load, hold=hold)
        await nc.publish(REDIRECTS_BUSY, msgspec.json.encode(busy))
        await nc.flush()

    assert await view() == {"busy": False, "gateway": None, "load": None, "yield_lag_seconds": 60.0}
    await say("long:1", 0.97, 8.0)
    await say("brief:2", 0.9, 1.5)
    await eventually(lambda: named("brief:2"), 10, "the latest busy gateway")
    # Its hold over, the one still holding is named, with its own load.
    await eventually(lambda: named("long:1"), 10, "the one still holding")
    assert await view() == {
        "busy": True,
        "gateway": "long:1",
        "load": 0.97,
        "yield_lag_seconds": 60.0,
    }
    await eventually(lambda: named(None), 15, "the last hold to end")
    assert not (await view())["busy"]
