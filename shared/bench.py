"""``linkflow bench``: redirect throughput against a bare ASGI baseline measured
in the same run, and the click-recorder's drain rate.

These machines are shared and noisy, so absolute numbers say little: the
figure to read is the ratio of linkflow's redirect (with click capture) to a
bare ASGI app that answers 302 with no work, both served by the same uvicorn
configuration and loaded by the same wrk command, alternated.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from shared import bus, topology
from shared.contracts import Click, encode, now
from shared.embedded import NatsServer, PostgresServer, free_port, port_open, wait_until
from shared.migrate import migrate_all


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: a 302 with the same headers as linkflow's, and no work."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 302,
            "headers": [
                (b"location", b"https://example.com/"),
                (b"cache-control", b"private, max-age=0"),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: wrk not found; installing it from Debian's packages", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk could not be installed")
    return found


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, seconds: int, connections: int) -> Load:
    out = subprocess.run(
        [ensure_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} responses were not redirects:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return Load(rps, p50, p99)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _queue_clicks(nats_url: str, n: int) -> None:
    nc = await bus.connect(nats_url, "bench", forever=False)
    js = nc.jetstream()
    await js.purge_stream(topology.CLICKS)
    futures = []
    for i in range(n):
        c = Click(
            id=f"bench-{i:08d}",
            code="bench",
            ts=now(),
            user_agent="Mozilla/5.0",
            ip="203.0.113.0",
            referrer="https://example.org/",
        )
        futures.append(
            await js.publish_async(f"clicks.{c.code}", encode(c), headers={"Nats-Msg-Id": c.id})
        )
        if len(futures) >= 2000:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    await nc.drain()


async def _rows(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM clicks"))
    finally:
        await conn.close()


def run(seconds: int, connections: int, clicks: int) -> int:
    home = Path(tempfile.mkdtemp(prefix="linkflow-bench-"))
    nats = NatsServer(home / "nats").start()
    pg = PostgresServer(home / "pg").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db_url = pg.url("linkflow")
        env = {
            **os.environ,
            "LINKFLOW_NATS_URL": nats.url,
            "LINKFLOW_DATABASE_URL": db_url,
            "LINKFLOW_ANALYTICS_DATABASE_URL": pg.url("linkflow_analytics"),
            "LINKFLOW_LOG_LEVEL": "WARNING",
        }
        asyncio.run(migrate_all(env))
        gw_port, bare_port = free_port(), free_port()
        env["LINKFLOW_LINK_PORT"] = str(gw_port)
        procs.append(_spawn([sys.executable, "-m", "services.link"], env, home / "link.log"))
        procs.append(
            _spawn(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "shared.bench:bare_app",
                    "--port",
                    str(bare_port),
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
                home / "bare.log",
            )
        )
        wait_until(lambda: port_open(gw_port) and port_open(bare_port), 30, "the servers")
        gw = f"http://127.0.0.1:{gw_port}"
        created = httpx.post(
            f"{gw}/api/links", json={"url": "https://example.com/", "code": "bench"}
        )
        created.raise_for_status()
        assert httpx.get(f"{gw}/bench").status_code == 302  # warm: in the map, stream open
        print(
            f"bench: {seconds}s per run, {connections} connections, wrk -t1, "
            "baseline and linkflow alternated twice",
            flush=True,
        )
        bare: list[Load] = []
        link: list[Load] = []
        for _ in range(2):
            bare.append(wrk(f"http://127.0.0.1:{bare_port}/bench", seconds, connections))
            link.append(wrk(f"{gw}/bench", seconds, connections))
        a = max(bare, key=lambda x: x.rps)
        b = max(link, key=lambda x: x.rps)
        for name, r in (("(a) bare ASGI 302", a), ("(b) linkflow redirect", b)):
            print(
                f"{name:<24} {r.rps:>9.0f} req/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms",
                flush=True,
            )
        ratios = [lb.rps / la.rps for la, lb in zip(bare, link, strict=True)]
        print(
            f"ratio b/a: {b.rps / a.rps:.2f} (best of each; per pair "
            f"{', '.join(f'{r:.2f}' for r in ratios)}, median {statistics.median(ratios):.2f})"
        )
        for p in procs:
            _stop(p)
        procs.clear()

        asyncio.run(_queue_clicks(nats.url, clicks))
        asyncio.run(_truncate(db_url))
        recorder = _spawn(
            [sys.executable, "-m", "services.click_recorder"],
            {**env, "LINKFLOW_CLICK_RECORDER_PORT": str(free_port())},
            home / "recorder.log",
        )
        procs.append(recorder)
        first, started = 0, 0.0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            n = asyncio.run(_rows(db_url))
            if n and not started:
                first, started = n, time.monotonic()
            if n >= clicks:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        rate = (clicks - first) / elapsed if elapsed > 0 else float("inf")
        print(
            f"click-recorder drained {clicks} queued clicks at {rate:,.0f} clicks/s "
            f"({elapsed:.2f}s after the first rows landed)"
        )
        return 0
    finally:
        for p in procs:
            _stop(p)
        pg.stop()
        nats.stop()
        shutil.rmtree(home, ignore_errors=True)


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE clicks")
    finally:
        await conn.close()
