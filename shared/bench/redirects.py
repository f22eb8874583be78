"""``linkflow bench`` (the default run): redirect throughput against a bare ASGI baseline measured
in the same run, and the click-recorder's drain rate.

These machines are shared and noisy, so absolute numbers say little: the
figure to read is the ratio of linkflow's redirect (with click capture) to a
bare ASGI app that answers 302 with no work, both served by the same uvicorn
configuration and loaded by the same wrk command, alternated.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from shared.bench import placement
from shared.bench.client import Client
from shared.bench.drain import bare, drain, service
from shared.bench.wrk import Load, measured, wrk, wrk_path
from shared.cli.migrate import migrate_all
from shared.cli.process import Process
from shared.cli.servers import (
    NatsServer,
    PostgresServer,
    free_port,
    port_open,
    wait_until,
)
from shared.http import keys
from shared.jetstream import bus, topology


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


async def _bench_key(nats_url: str) -> str:
    nc = await bus.connect(nats_url, "bench-key", forever=False)
    try:
        # admin: the bench adds a short domain too.
        return await keys.create(nc.jetstream(), "bench", (keys.ADMIN,))
    finally:
        await nc.drain()


def propagation(gateways: list[str], updates: int, key: str) -> list[float]:
    """Seconds from a PATCH returning until every gateway redirects to the new URL."""
    delays: list[float] = []
    with Client(headers={"authorization": f"Bearer {key}"}) as http:
        http.post(
            f"{gateways[0]}/api/links", json={"url": "https://example.com/v0", "code": "moving"}
        ).raise_for_status()
        for i in range(1, updates + 1):
            target = f"https://example.com/v{i}"
            http.patch(
                f"{gateways[i % len(gateways)]}/api/links/moving", json={"url": target}
            ).raise_for_status()
            started = time.perf_counter()
            waiting = set(gateways)
            deadline = started + 5
            while waiting and time.perf_counter() < deadline:
                for gw in list(waiting):
                    if http.head(f"{gw}/moving").headers.get("location") == target:
                        waiting.discard(gw)
            if waiting:
                raise RuntimeError(f"update {i} did not reach {sorted(waiting)} in 5 s")
            delays.append(time.perf_counter() - started)
    return delays


async def _spool_rate(directory: Path, n: int, concurrency: int) -> tuple[float, float]:
    """Clicks/s into the gateway's spool (write + fdatasync per group, as
    during a NATS outage) and the cost of one bare fdatasync in ms. The
    gateway provides the measurement as a declared entry point, so that
    shared/ imports no service."""
    (entry,) = entry_points(group="linkflow.bench", name="spool_append_rate")
    rate: float = await entry.load()(directory, n, concurrency)
    probe = directory / "fsync-probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(50):
            os.write(fd, b"x")
            os.fdatasync(fd)
        sync_ms = (time.perf_counter() - t0) / 50 * 1000
    finally:
        os.close(fd)
    return rate, sync_ms


# Five rules, each of another kind, none of which holds for wrk's desktop
# browser without Accept-Language, country header or query.
FIVE_RULES = [
    {"when": {"device": ["mobile", "tablet"]}, "url": "https://example.com/m"},
    {"when": {"os": ["ios", "android"]}, "url": "https://example.com/o"},
    {"when": {"language": ["fr", "de"]}, "url": "https://example.com/l"},
    {"when": {"country": ["DE", "AT", "CH"]}, "url": "https://example.com/c"},
    {
        "when": {"query": {"src": "news"}, "after": "2020-01-01T00:00:00Z"},
        "url": "https://example.com/q",
    },
]


# An A/B split of two equal halves: the draw from the visitor id, every time.
SPLIT = [
    {"url": "https://example.com/a", "weight": 1},
    {"url": "https://example.com/b", "weight": 1},
]
# A second short domain in every gateway's map, as a deployment with its own
# domains has: the redirect then reads the request's Host for its domain.
SECOND_DOMAIN = "go.example.com"


def _targets(median: float, p99_ms: float, recorder_rate: float) -> None:
    """The figures linkflow holds itself to on a 2-core machine, met or not
    (issue 14: the gateway alone at 0.7 of the bare app, median of the rounds)."""
    checks = [
        (f"median ratio b/a {median:.2f} >= 0.70", median >= 0.7),
        (f"redirect p99 {p99_ms:.2f} ms < 10 ms", p99_ms < 10),
        (f"recorder drain {recorder_rate:,.0f} >= 30,000 clicks/s", recorder_rate >= 30_000),
    ]
    verdicts = "; ".join(f"{text}: {'met' if ok else 'MISSED'}" for text, ok in checks)
    print(f"bench: targets: {verdicts}", flush=True)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _exit_on_sigterm(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


def run(
    seconds: int,
    connections: int,
    clicks: int,
    rounds: int = 4,
    pin: bool = True,
    domains: int = 2,
) -> int:
    # A SIGTERM unwinds through the ``finally`` below like Ctrl-C does: the
    # servers it started run in sessions of their own and would outlive the
    # bench, and a stray nats-server or PostgreSQL skews every later bench.
    wrk_path()  # before any server starts: without wrk there is nothing to measure
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    home = Path(tempfile.mkdtemp(prefix="linkflow-bench-"))
    nats = NatsServer(home / "nats").start()
    pg = PostgresServer(home / "pg").start()
    procs: list[Process] = []
    try:
        db_url, analytics_url = pg.url("linkflow"), pg.url("linkflow_analytics")
        env = {
            **os.environ,
            "LINKFLOW_NATS_URL": nats.url,
            "LINKFLOW_DATABASE_URL": db_url,
            "LINKFLOW_ANALYTICS_DATABASE_URL": analytics_url,
            "LINKFLOW_LOG_LEVEL": "WARNING",
            # The propagation measurement PATCHes 200 times as fast as it can:
            # the bench's own key is no client to hold to 50 writes a second.
            "LINKFLOW_LINK_WRITE_RATE": "100000/s",
        }
        asyncio.run(migrate_all(env))
        key = asyncio.run(_bench_key(nats.url))
        gw_port, gw2_port, bare_port = free_port(), free_port(), free_port()
        procs.append(service("services.link", env, home / "link.log", gw_port))
        procs.append(bare(bare_port, env, home / "bare.log"))
        wait_until(lambda: port_open(gw_port) and port_open(bare_port), 30, "the servers")
        gw = f"http://127.0.0.1:{gw_port}"
        with Client(headers={"authorization": f"Bearer {key}"}) as http:
            on: list[str | None] = [None]
            if domains > 1:
                http.post(f"{gw}/api/domains", json={"host": SECOND_DOMAIN}).raise_for_status()
                on.append(SECOND_DOMAIN)
            for domain in on:
                http.post(
                    f"{gw}/api/links",
                    json={"url": "https://example.com/", "code": "bench", "domain": domain},
                ).raise_for_status()
            # Warm: in the map, stream open.
            assert http.get(f"{gw}/bench").status_code == 302
            # The same redirect from a link with five rules, none of which
            # holds for wrk's desktop browser: every condition kind evaluated,
            # then the link's own target (the most a rule costs a redirect).
            http.post(
                f"{gw}/api/links",
                json={"url": "https://example.com/", "code": "ruled", "rules": FIVE_RULES},
            ).raise_for_status()
            assert http.get(f"{gw}/ruled").status_code == 302
            http.post(
                f"{gw}/api/links",
                json={"url": "https://example.com/", "code": "split", "destinations": SPLIT},
            ).raise_for_status()
            assert http.get(f"{gw}/split").status_code == 302
        assert nats.proc is not None
        # One core for the server under test, the rest for everything else
        # (shared.bench.placement says why); put back once the comparison is done.
        layout = placement.split() if pin else None
        if layout:
            placement.pin(layout.server, procs[0].pid, procs[1].pid)
            # wrk is the bench's child, so it runs where the bench does.
            placement.pin(layout.rest, nats.proc.pid, os.getpid())
        print(
            f"bench: redirects, {seconds}s per run, {connections} connections, wrk -t1, "
            f"baseline and linkflow alternated {rounds} times, {domains} domain(s) in the map; "
            + (layout.describe() if layout else "every process placed by the OS"),
            flush=True,
        )
        # Short runs, alternated: both sides see the same phases of a shared
        # machine. Its noise only ever slows a run down, so the best run of
        # each side is the nearest to what the software does (timeit's rule).
        # One short run of each first, not counted: connections, the click
        # stream's first block and both processes' caches warm up.
        wrk(f"http://127.0.0.1:{bare_port}/bench", 2, connections)
        wrk(f"{gw}/bench", 2, connections)
        wrk(f"{gw}/ruled", 2, connections)
        wrk(f"{gw}/split", 2, connections)
        gateway_pids = {"gateway": procs[0].pid, "nats-server": nats.proc.pid}
        sides = {
            "a": (f"http://127.0.0.1:{bare_port}/bench", {"app": procs[1].pid}),
            "b": (f"{gw}/bench", gateway_pids),
            "c": (f"{gw}/ruled", gateway_pids),
            "d": (f"{gw}/split", gateway_pids),
        }
        runs: dict[str, list[tuple[Load, dict[str, float]]]] = {s: [] for s in sides}
        for _ in range(rounds):
            for side, (url, pids) in sides.items():
                runs[side].append(measured(url, seconds, connections, pids))
        (a, a_cpu), (b, b_cpu), (c, c_cpu), (d, d_cpu) = (
            max(runs[s], key=lambda r: r[0].rps) for s in ("a", "b", "c", "d")
        )
        for name, r, cpu in (
            ("(a) bare ASGI 302", a, a_cpu),
            ("(b) linkflow redirect", b, b_cpu),
            ("(c) ... with five rules", c, c_cpu),
            ("(d) ... with an A/B split", d, d_cpu),
        ):
            per_request = ", ".join(f"{k} {v:.1f} µs" for k, v in cpu.items())
            print(
                f"  {name:<24} {r.rps:>9.0f} req/s  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms"
                + (f"  CPU per request: {per_request}" if per_request else ""),
                flush=True,
            )
        medians: dict[str, float] = {}
        for side in ("b", "c", "d"):
            ratios = [
                lb.rps / la.rps for (la, _), (lb, _) in zip(runs["a"], runs[side], strict=True)
            ]
            best = max(r[0].rps for r in runs[side])
            medians[side] = statistics.median(ratios)
            print(
                f"  ratio {side}/a: {best / a.rps:.2f} (best of each; per round "
                f"{', '.join(f'{r:.2f}' for r in ratios)}, median {medians[side]:.2f})",
                flush=True,
            )
        # Per round, as the ratios: (b) and (c) ran minutes apart at most, and
        # a difference of two best runs carries the noise of both.
        for side, what in (("c", "five rules"), ("d", "an A/B split")):
            drop = statistics.median(
                (lb.rps - lx.rps) / la.rps
                for (la, _), (lb, _), (lx, _) in zip(runs["a"], runs["b"], runs[side], strict=True)
            )
            print(
                f"  {what} cost {drop:+.3f} of the bare app's rate, median of the rounds "
                f"(target: at most 0.03: {'met' if drop <= 0.03 else 'MISSED'})",
                flush=True,
            )
        procs.pop().stop()  # the baseline
        if layout:
            placement.pin(layout.everywhere, procs[0].pid, nats.proc.pid, os.getpid())

        # Back-pressure: with the recorder draining, the redirect's latency
        # with PostgreSQL up and with it down (the recorder holding and
        # backing off) should be the same: redirects never touch the database.
        recorder = service("services.click_recorder", env, home / "recorder-bp.log")
        up = wrk(f"{gw}/bench", seconds, connections)
        pg.stop()
        try:
            down = wrk(f"{gw}/bench", seconds, connections)
        finally:
            pg.start()
            recorder.stop()
        print(
            f"bench: redirect with the recorder draining, PostgreSQL up: {up.rps:.0f} req/s, "
            f"p50 {up.p50_ms:.2f} ms, p99 {up.p99_ms:.2f} ms; PostgreSQL down: "
            f"{down.rps:.0f} req/s, p50 {down.p50_ms:.2f} ms, p99 {down.p99_ms:.2f} ms",
            flush=True,
        )

        procs.append(service("services.link", env, home / "link2.log", gw2_port))
        procs.append(service("services.cache_refresher", env, home / "cache_refresher.log"))
        wait_until(lambda: port_open(gw2_port), 30, "the second gateway")
        delays = propagation([gw, f"http://127.0.0.1:{gw2_port}"], 200, key)
        print(
            f"bench: link change propagation, 200 PATCHes, 2 gateways + cache-refresher: "
            f"p50 {_pct(delays, 50) * 1000:.1f} ms, p99 {_pct(delays, 99) * 1000:.1f} ms, "
            f"max {max(delays) * 1000:.1f} ms",
            flush=True,
        )
        for p in procs:
            p.stop()
        procs.clear()

        recorder_rate = drain(
            "click-recorder",
            "services.click_recorder",
            topology.CLICK_RECORDER,
            env,
            db_url,
            "clicks",
            clicks,
            home,
        )
        print(
            f"bench: click-recorder drained {clicks} queued clicks at {recorder_rate:,.0f} "
            "clicks/s",
            flush=True,
        )
        spool_rate, sync_ms = asyncio.run(_spool_rate(home / "spool", 20_000, connections))
        print(
            f"bench: gateway spool (NATS down) took 20000 clicks at {spool_rate:,.0f} "
            f"clicks/s from {connections} concurrent redirects; one fdatasync costs "
            f"{sync_ms:.2f} ms here",
            flush=True,
        )
        rate = drain(
            "analytics",
            "services.analytics",
            topology.ANALYTICS_CLICKS,
            env,
            analytics_url,
            "counted_clicks",
            clicks,
            home,
        )
        print(
            f"bench: analytics consumer drained {clicks} queued clicks at {rate:,.0f} clicks/s",
            flush=True,
        )
        _targets(medians["b"], b.p99_ms, recorder_rate)
        return 0
    finally:
        for p in procs:
            p.stop()
        pg.stop()
        nats.stop()
        shutil.rmtree(home, ignore_errors=True)
