"""How fast a worker service drains clicks queued on ``CLICKS`` (``linkflow
bench``): queue them, start the service, time its acks, count its rows."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg

from shared.cli.process import Process
from shared.cli.servers import free_port
from shared.contracts import HDR_MSG_ID, Click, encode, now
from shared.jetstream import bus, topology


def spawn(args: list[str], env: dict[str, str], log: Path, nice: int = 0) -> Process:
    proc = Process(log)
    proc.spawn(args, env, nice=nice)
    return proc


def asgi(app: str, port: int, env: dict[str, str], log: Path, nice: int = 0) -> Process:
    """``app`` (``module:attribute``) under the same uvicorn as the gateway
    (httptools, uvloop, no access log)."""
    return spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--port",
            str(port),
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ],
        env,
        log,
        nice,
    )


def bare(port: int, env: dict[str, str], log: Path) -> Process:
    """The bench's baseline: ``shared.bench.redirects:bare_app``."""
    return asgi("shared.bench.redirects:bare_app", port, env, log)


def service(module: str, env: dict[str, str], log: Path, port: int | None = None) -> Process:
    """``python -m <module>`` on its ``LINKFLOW_<SERVICE>_PORT`` (a free one by default)."""
    service = module.rsplit(".", 1)[-1].upper()
    port_env = {f"LINKFLOW_{service}_PORT": str(port or free_port())}
    return spawn([sys.executable, "-m", module], {**env, **port_env}, log)


async def _queue_clicks(nats_url: str, n: int) -> None:
    nc = await bus.connect(nats_url, "bench", forever=False)
    js = nc.jetstream()
    await js.purge_stream(topology.CLICKS)
    futures = []
    # Fresh ids each round: the stream's duplicate window remembers old ones.
    run_id = os.urandom(4).hex()
    for i in range(n):
        c = Click(
            id=f"bench-{run_id}-{i:08d}",
            code="bench",
            ts=now(),
            user_agent="Mozilla/5.0",
            ip="203.0.113.0",
            referrer="https://example.org/",
        )
        futures.append(
            await js.publish_async(f"clicks.{c.code}", encode(c), headers={HDR_MSG_ID: c.id})
        )
        if len(futures) >= 2000:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    await nc.drain()


async def _truncate(url: str, table: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"TRUNCATE {table}")
    finally:
        await conn.close()


async def count_rows(url: str, table: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608
    finally:
        await conn.close()


async def _watch_acks(nats_url: str, consumer: topology.Consumer, clicks: int) -> float:
    """Clicks/s from the consumer's first ack to its last, read from its ack
    floor: a worker acks only after its commit, so the floor is what is in
    PostgreSQL. Polling the table instead would fork a backend and scan it
    every few milliseconds, on the same two cores as the drain it measures."""
    nc = await bus.connect(nats_url, "bench-watch", forever=False)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(consumer.stream)).state.last_seq
        first_seq = last - clicks + 1
        floor, start_floor, started = 0, 0, 0.0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = await js.consumer_info(consumer.stream, consumer.name)
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            if floor >= first_seq and not started:
                start_floor, started = floor, time.perf_counter()
            if floor >= last:
                elapsed = time.perf_counter() - started
                return (last - start_floor) / elapsed if elapsed > 0 else float("inf")
            await asyncio.sleep(0.02)  # wait-ok: a poll interval, the loop has a deadline
        raise RuntimeError(f"only {max(floor - first_seq + 1, 0)} of {clicks} acked after 120 s")
    finally:
        await nc.close()


def drain(
    name: str,
    module: str,
    consumer: topology.Consumer,
    env: dict[str, str],
    url: str,
    table: str,
    clicks: int,
    home: Path,
) -> float:
    """Queue ``clicks`` on CLICKS, start the service, time until all are acked,
    then check that all are in ``table``."""
    asyncio.run(_queue_clicks(env["LINKFLOW_NATS_URL"], clicks))
    asyncio.run(_truncate(url, table))  # rows of earlier stages would count
    proc = service(module, env, home / f"{name}.log")
    try:
        try:
            rate = asyncio.run(_watch_acks(env["LINKFLOW_NATS_URL"], consumer, clicks))
        except RuntimeError as exc:
            log = (home / f"{name}.log").read_text()[-3000:]
            raise RuntimeError(f"{name}: {exc}; log:\n{log}") from exc
        stored = asyncio.run(count_rows(url, table))
        if stored != clicks:
            raise RuntimeError(f"{name}: acked {clicks} clicks but {table} has {stored} rows")
        return rate
    finally:
        proc.stop()
