"""Break linkflow for real while redirects flow, then count.

Every test runs the four services as processes (as ``linkflow up`` does)
against its own NATS and PostgreSQL, drives redirects through the gateway
the whole time, breaks something, and ends by comparing the clicks served
(each 3xx carries its click's request id) with the rows recorded and the
clicks counted by analytics: same ids, none twice, nothing in the DLQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.cli.servers import NatsServer, PostgresServer
from shared.cli.supervisor import Child, Supervisor
from shared.jetstream import bus, topology
from tests.harness import eventually, key_header, service_ports

pytestmark = pytest.mark.e2e


@dataclass
class Stack:
    nats: NatsServer
    pg: PostgresServer
    sup: Supervisor
    env: dict[str, str]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.env[f'LINKFLOW_{service.upper()}_PORT']}"

    def child(self, name: str) -> Child:
        return next(c for c in self.sup.children if c.name == name)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    nats = NatsServer(tmp_path / "nats").start()
    pg = PostgresServer(tmp_path / "pg", durable=False).start()
    env = {
        "LINKFLOW_NATS_URL": nats.url,
        "LINKFLOW_DATABASE_URL": pg.url("linkflow"),
        "LINKFLOW_ANALYTICS_DATABASE_URL": pg.url("linkflow_analytics"),
        "LINKFLOW_PUBLIC_URL": "http://sho.rt",
        # Fast retries and a short ack wait, so a test sees recovery in seconds.
        "LINKFLOW_MIN_RETRY_DELAY": "100ms",
        "LINKFLOW_MAX_RETRY_DELAY": "1s",
        "LINKFLOW_ACK_WAIT": "2s",
        **service_ports(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sup = Supervisor(tmp_path, log_to_files=True)
    sup.start()
    watcher = threading.Thread(target=sup.watch, daemon=True)
    watcher.start()
    yield Stack(nats, pg, sup, env)
    sup.stop()
    watcher.join(5)
    pg.stop()
    nats.stop()


async def ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as c:
            return (await c.get(f"{url}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def all_ready(stack: Stack) -> bool:
    checks = [
        ready(stack.url(s)) for s in ("link", "analytics", "click_recorder", "cache_refresher")
    ]
    return all(await asyncio.gather(*checks))


@dataclass
class Load:
    """Redirects from ``concurrency`` clients until stopped (or a cap is hit)."""

    url: str
    code: str
    concurrency: int = 16
    cap: int = 60_000
    served: set[str] = field(default_factory=set)
    failed: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _client(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            while not self.stop.is_set() and len(self.served) < self.cap:
                try:
                    r = await client.get(f"/{self.code}")
                except httpx.HTTPError:
                    self.failed += 1
                    await asyncio.sleep(0.05)  # wait-ok: gateway restarting, back off
                    continue
                if 300 <= r.status_code < 400:
                    self.served.add(r.headers["x-request-id"])
                else:
                    self.failed += 1

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, url: str, code: str) -> AsyncIterator[Load]:
        load = cls(url, code)
        tasks = [asyncio.create_task(load._client()) for _ in range(load.concurrency)]
        try:
            yield load
        finally:
            load.stop.set()
            await asyncio.gather(*tasks)

    async def until(self, n: int, timeout: float = 30) -> None:
        async def enough() -> bool:
            return len(self.served) >= n

        await eventually(enough, timeout, f"{n} redirects served")


async def create_link(stack: Stack, code: str) -> None:
    await eventually(lambda: all_ready(stack), 60, "every service ready")
    headers = key_header(stack.sup.home)
    async with httpx.AsyncClient(base_url=stack.url("link"), headers=headers) as c:
        r = await c.post("/api/links", json={"url": "https://example.com/", "code": code})
        assert r.status_code == 201, r.text


async def ids(url: str, sql: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def assert_all_recorded_once(stack: Stack, load: Load) -> dict[str, float]:
    """Wait for the pipeline to drain, then compare by id. Returns figures."""
    served = load.served
    started = time.monotonic()
    recorded_sql = "SELECT request_id FROM clicks"
    counted_sql = "SELECT id FROM counted_clicks"
    db, analytics = stack.env["LINKFLOW_DATABASE_URL"], stack.env["LINKFLOW_ANALYTICS_DATABASE_URL"]

    async def drained() -> bool:
        rec = await ids(db, "SELECT count(*)::text FROM clicks")
        cnt = await ids(analytics, "SELECT count(*)::text FROM counted_clicks")
        return int(rec[0]) >= len(served) and int(cnt[0]) >= len(served)

    await eventually(drained, 90, f"{len(served)} clicks recorded and counted")
    drain_seconds = time.monotonic() - started
    recorded = await ids(db, recorded_sql)
    assert len(recorded) == len(set(recorded)), "a click was recorded twice"
    assert set(recorded) == served
    click_ids = await ids(db, "SELECT id FROM clicks")
    counted = await ids(analytics, counted_sql)
    assert sorted(counted) == sorted(click_ids)
    nc = await bus.connect(stack.nats.url, "fault-check", forever=False)
    try:
        dlq = await nc.jetstream().stream_info(topology.DLQ)
        assert dlq.state.messages == 0, "something transient was dead-lettered"
    finally:
        await nc.drain()
    return {
        "served": len(served),
        "recorded": len(recorded),
        "failed": load.failed,
        "drain_seconds": round(drain_seconds, 2),
    }


async def test_kill_9_click_recorder_mid_batch(stack: Stack) -> None:
    await create_link(stack, "kill9")
    async with Load.running(stack.url("link"), "kill9") as load:
        await load.until(2000)
        recorder = stack.child("click_recorder")
        assert recorder.proc is not None
        os.kill(recorder.proc.pid, signal.SIGKILL)

        async def restarted() -> bool:
            return recorder.restarts >= 1 and await ready(stack.url("click_recorder"))

        await eventually(restarted, 30, "the click-recorder restarted by linkflow up")
        await load.until(len(load.served) + 2000)
    figures = await assert_all_recorded_once(stack, load)
    print(f"kill -9 click-recorder: {figures}")


async def outage(stack: Stack, code: str, server: NatsServer | PostgresServer) -> str:
    """Stop ``server`` for 10 s under load, start it again on the same data,
    and check that redirects kept answering and every click arrived once."""
    await create_link(stack, code)
    async with Load.running(stack.url("link"), code) as load:
        await load.until(1000)
        server.stop()
        before = len(load.served)
        await asyncio.sleep(10)  # wait-ok: the outage's length is the fault under test
        during = len(load.served) - before
        assert during > 500
        server.start()
        await load.until(len(load.served) + 1000)
    figures = await assert_all_recorded_once(stack, load)
    return f"{figures}, served during the outage: {during}"


async def test_postgres_stopped_10s_under_load(stack: Stack) -> None:
    # Redirects never touch the database: they keep flowing.
    print(f"PostgreSQL down 10 s: {await outage(stack, 'pgdown', stack.pg)}")


async def test_rolling_sigterm_of_every_service(stack: Stack) -> None:
    await create_link(stack, "rolling")
    async with Load.running(stack.url("link"), "rolling") as load:
        await load.until(1000)
        for name in ("click_recorder", "analytics", "cache_refresher", "link"):
            child = stack.child(name)
            proc = child.proc
            assert proc is not None
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
            assert proc.returncode == 0, f"{name} exited with {proc.returncode}"

            async def back(child: Child = child, name: str = name) -> bool:
                return child.restarts >= 1 and await ready(stack.url(name))

            await eventually(back, 30, f"{name} back after SIGTERM")
            await load.until(len(load.served) + 500)
    figures = await assert_all_recorded_once(stack, load)
    print(f"rolling SIGTERM: {figures}")


async def test_nats_stopped_10s_under_load(stack: Stack) -> None:
    # Redirects keep answering, their clicks in the gateway's spool.
    print(f"NATS down 10 s: {await outage(stack, 'natsdown', stack.nats)}")


async def test_database_slower_than_ack_wait(stack: Stack) -> None:
    """Every INSERT into clicks takes longer than the consumer's ack wait (2 s
    here): the recorder signals progress, nothing is redelivered to a second
    fetch meanwhile, and every click is recorded once."""
    db = stack.env["LINKFLOW_DATABASE_URL"]
    await create_link(stack, "slowdb")
    conn = await asyncpg.connect(db)
    try:
        await conn.execute("""
            CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS
            -- wait-ok: a database slower than the ack wait is the fault under test
            $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;
            CREATE TRIGGER slow_clicks BEFORE INSERT ON clicks
            FOR EACH STATEMENT EXECUTE FUNCTION slow_down();
        """)

        async def insert_outlived_ack_wait() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE '%INSERT INTO clicks%' AND query NOT LIKE '%pg_stat_activity%' "
                "AND now() - query_start > interval '2.2 seconds'"
            )
            return bool(n)

        async with Load.running(stack.url("link"), "slowdb") as load:
            await load.until(3000)
            await eventually(insert_outlived_ack_wait, 30, "an INSERT past the ack wait")
        await conn.execute("DROP TRIGGER slow_clicks ON clicks")
        figures = await assert_all_recorded_once(stack, load)
    finally:
        await conn.close()
    nc = await bus.connect(stack.nats.url, "fault-check", forever=False)
    try:
        info = await nc.jetstream().consumer_info(topology.CLICKS, topology.CLICK_RECORDER.name)
    finally:
        await nc.drain()
    assert info.num_redelivered == 0
    print(f"database slower than the ack wait: {figures}, redelivered: 0")
