"""``linkflow bench --system``: linkflow as ``linkflow up`` runs it on this
machine (all four services, embedded NATS and PostgreSQL, nothing pinned),
measured the way an operator meets it.

In one run, against a bare ASGI 302 served on the same machine:

- a spike: wrk at ``connections`` for ``seconds`` against the gateway while
  every service runs, then the time until every consumer has caught up
  (nothing pending, every served click stored and counted);
- the CPU each process spent per click of the spike (gateway, nats-server,
  recorder, analytics, cache-refresher, PostgreSQL with its backends) and
  the services' largest RSS during it;
- the sustained rate: the highest redirect rate at which every consumer
  keeps up (the backlog does not grow over a step), stepping a rate-limited
  load up from a tenth of the bare app's peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nats.js.errors import NotFoundError

from shared import roster
from shared.bench import anatomy
from shared.bench.client import Client
from shared.bench.drain import bare, count_rows
from shared.bench.wrk import rss_mb, tree_cpu_seconds, wrk, wrk_path
from shared.cli.probe import not_ready
from shared.cli.servers import free_ports, port_open, wait_until
from shared.cli.supervisor import Supervisor
from shared.jetstream import bus, topology
from shared.priority import background_group

REDIRECTS = re.compile(r'^linkflow_redirects_total\{status="302"\} (\S+)$', re.M)


def redirects_served(gateway: str) -> int:
    with Client() as http:
        found = REDIRECTS.search(http.get(f"{gateway}/metrics").text)
    return int(float(found.group(1))) if found else 0


# The webhooks service's consumers, which it makes itself: webhooks-clicks
# only while an endpoint wants link.clicked.
OWN_CONSUMERS = (topology.WEBHOOKS_LINKS, topology.WEBHOOKS_CLICKS)


async def _backlog(nats_url: str) -> int:
    """Messages every durable consumer has yet to settle: linkflow's, and the
    webhooks service's where they exist."""
    nc = await bus.connect(nats_url, "bench-backlog", forever=False)
    try:
        js = nc.jetstream()
        total = 0
        for c in (*topology.CONSUMERS, *OWN_CONSUMERS):
            try:
                info = await js.consumer_info(c.stream, c.name)
            except NotFoundError:
                if c in OWN_CONSUMERS:
                    continue
                raise
            total += (info.num_pending or 0) + (info.num_ack_pending or 0)
        return total
    finally:
        await nc.close()


def caught_up(env: dict[str, str], served: int) -> bool:
    return (
        asyncio.run(_backlog(env["LINKFLOW_NATS_URL"])) == 0
        and asyncio.run(count_rows(env["LINKFLOW_DATABASE_URL"], "clicks")) >= served
        and asyncio.run(count_rows(env["LINKFLOW_ANALYTICS_DATABASE_URL"], "counted_clicks"))
        >= served
    )


class _PeakRss(threading.Thread):
    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak = pids, dict.fromkeys(pids, 0.0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_mb(pid) or 0.0)


def _exit_on_sigterm(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


@dataclass(frozen=True)
class System:
    """linkflow as ``linkflow up`` runs it, with the bench's link ``bench``
    created, and the bare app beside it."""

    env: dict[str, str]
    home: Path
    sup: Supervisor
    gateway: str  # http://127.0.0.1:<port>, the gateway's
    bare: str  # the bare app's URL of /bench
    key: str  # the admin key

    def service_url(self, service: roster.Service) -> str:
        return f"http://127.0.0.1:{self.env[f'LINKFLOW_{service.name.upper()}_PORT']}"

    def anatomy(self, pids: dict[str, int]) -> anatomy.Reading:
        """A reading of where clicks' cost goes (shared.bench.anatomy)."""
        assert self.sup.pg is not None
        workers = (roster.LINK, roster.CLICK_RECORDER, roster.ANALYTICS)
        metrics = [f"{self.service_url(s)}/metrics" for s in workers]
        return anatomy.read(pids, metrics, self.sup.pg.url("postgres"))

    def pids(self) -> dict[str, int]:
        """Each server's process by the name the bench prints: the services,
        nats-server and PostgreSQL's postmaster (its backends are its children)."""
        assert self.sup.nats is not None
        assert self.sup.pg is not None
        children = {c.name: c.pid for c in self.sup.children}
        return {
            "gateway": children["link"],
            "nats-server": self.sup.nats.pid,
            "click-recorder": children["click_recorder"],
            "analytics": children["analytics"],
            "cache-refresher": children["cache_refresher"],
            "webhooks": children["webhooks"],
            "postgresql": self.sup.pg.pid,
        }


@contextlib.contextmanager
def running(extra_env: dict[str, str] | None = None) -> Iterator[System]:
    """Start everything as ``linkflow up`` does (with ``extra_env`` in every
    service's environment), wait until each service is ready, create the
    link ``bench``; stop it all and remove its files on leaving."""
    wrk_path()  # before any server starts: without wrk there is nothing to measure
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    home = Path(tempfile.mkdtemp(prefix="linkflow-system-bench-"))
    ports = free_ports(len(roster.ALL) + 1)
    bare_port = ports.pop()
    for service, port in zip(roster.ALL, ports, strict=True):
        os.environ[f"LINKFLOW_{service.name.upper()}_PORT"] = str(port)
    os.environ.setdefault("LINKFLOW_LOG_LEVEL", "WARNING")
    # The bench's own key PATCHes nothing, but creates its link at once.
    os.environ["LINKFLOW_LINK_WRITE_RATE"] = "100000/s"
    os.environ.update(extra_env or {})
    sup = Supervisor(home, log_to_files=True)
    baseline = None
    try:
        env = sup.start()
        baseline = bare(bare_port, env, home / "bare.log")
        wait_until(lambda: all(port_open(p) for p in [*ports, bare_port]), 60, "the services")
        gateway = f"http://127.0.0.1:{env['LINKFLOW_LINK_PORT']}"
        key = (home / "admin.key").read_text().strip()
        with Client(headers={"authorization": f"Bearer {key}"}) as http:
            for s in roster.ALL:
                health = env[f"LINKFLOW_{s.name.upper()}_PORT"]
                wait_until(lambda p=health: not_ready(p) is None, 60, f"{s.label} ready")
            # As linkflow up's watch does: each ready worker yields the CPU.
            wait_until(lambda: sup.settle() == 0, 60, "the workers lowered to nice 19")
            http.post(
                f"{gateway}/api/links", json={"url": "https://example.com/", "code": "bench"}
            ).raise_for_status()
            assert http.get(f"{gateway}/bench").status_code == 302
        yield System(env, home, sup, gateway, f"http://127.0.0.1:{bare_port}/bench", key)
    finally:
        if baseline is not None:
            baseline.stop()
        sup.stop()
        shutil.rmtree(home, ignore_errors=True)


def run_system(seconds: int, connections: int, step_seconds: int, sustained: bool) -> int:
    with running() as system:
        env, gateway = system.env, system.gateway
        pids = system.pids()
        print(
            f"bench --system: linkflow up on {os.cpu_count()} CPUs, nothing pinned; workers "
            f"and PostgreSQL at nice {roster.BACKGROUND}"
            f"{', the workers in the idle-class cgroup' if background_group() else ''}; "
            f"wrk -t1 -c{connections} {seconds}s",
            flush=True,
        )
        hot, cold = anatomy.wake_cost()
        print(
            f"  this machine: a round trip between two processes costs {hot:.1f} µs of CPU "
            f"back to back, {cold:.1f} µs with 2 ms of sleep between (the CPU woken each time)"
        )
        bare_load = wrk(system.bare, seconds, connections)
        print(f"  (a) bare ASGI 302     {bare_load.rps:8.0f} req/s  p99 {bare_load.p99_ms:6.2f} ms")

        before, reading, started = cpu(pids), system.anatomy(pids), time.monotonic()
        served_before = redirects_served(gateway)
        # The Python services' RSS (the target is theirs); Node's own baseline is
        # about 140 MB before the webhooks service does anything.
        python = ("nats-server", "postgresql", "webhooks")
        rss = _PeakRss({k: v for k, v in pids.items() if k not in python})
        rss.start()
        spike = wrk(f"{gateway}/bench", seconds, connections)
        ended = time.monotonic()
        rss.done.set()
        served = redirects_served(gateway)
        clicks = served - served_before
        ratio = spike.rps / bare_load.rps
        print(
            f"  (b) spike, all running {spike.rps:8.0f} req/s  p99 {spike.p99_ms:6.2f} ms  "
            f"ratio b/a {ratio:.2f}; {clicks} clicks",
            flush=True,
        )
        wait_until(lambda: caught_up(env, served), 600, "every consumer to catch up")
        drained = time.monotonic() - ended
        print(f"  caught up {drained:.1f} s after the spike (pending 0, rows == served)")
        costs = per_click(before, cpu(pids), clicks)
        spike_cost = sum(costs.values())
        print(
            "  CPU per click: "
            + ", ".join(f"{name} {us:.0f} µs" for name, us in costs.items())
            + f"; total {spike_cost:.0f} µs; the load generator (wrk) "
            f"{spike.wrk_us_per_request:.0f} µs a request"
        )
        window = time.monotonic() - started
        print(f"  where the spike's clicks went (the spike and its catch-up, {window:.1f} s):")
        print("\n".join(anatomy.table(reading, system.anatomy(pids), clicks, window)))
        print("  peak RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.peak.items()))

        steps: list[Step] = []
        if sustained:
            steps = _sustained(system, pids, bare_load.rps, step_seconds)
        kept = [step for step in steps if step.keeps_up]
        best = max((step.rps for step in kept), default=0.0)
        checks = [
            (f"spike ratio {ratio:.2f} >= 0.50", ratio >= 0.5),
            (f"spike p99 {spike.p99_ms:.2f} ms < 10 ms", spike.p99_ms < 10),
            (f"caught up in {drained:.1f} s <= {2 * seconds} s", drained <= 2 * seconds),
            (
                f"every service under 150 MB RSS (max {max(rss.peak.values()):.0f} MB)",
                max(rss.peak.values()) < 150,
            ),
        ]
        if sustained:
            top = max(kept, key=lambda step: step.rps, default=None)
            worst = max((step.p99_ms for step in kept), default=0.0)
            top_cost = top.cost_us if top else 0.0
            checks += [
                (
                    f"sustained {best / bare_load.rps:.2f} >= 0.30 of the bare app",
                    best / bare_load.rps >= 0.30,
                ),
                (f"p99 under 10 ms at every step kept up (max {worst:.2f} ms)", 0 < worst < 10),
                (
                    f"CPU per click at the highest step kept up {top_cost:.0f} µs <= 1.2x "
                    f"the spike's {spike_cost:.0f} µs",
                    0 < top_cost <= 1.2 * spike_cost,
                ),
            ]
        verdicts = "; ".join(f"{text}: {'met' if ok else 'MISSED'}" for text, ok in checks)
        print(f"bench --system: targets: {verdicts}", flush=True)
        return 0


def cpu(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: tree_cpu_seconds(pid) for name, pid in pids.items()}


def per_click(
    before: dict[str, float | None], after: dict[str, float | None], clicks: int
) -> dict[str, float]:
    """Each process's CPU between two readings, in µs per click."""
    costs = {}
    for name, start in before.items():
        end = after[name]
        if start is not None and end is not None and clicks:
            costs[name] = (end - start) / clicks * 1e6
    return costs


@dataclass(frozen=True)
class Step:
    """One steady step of the sustained-rate search."""

    fraction: float  # of the bare app's rate
    rps: float
    p99_ms: float
    cost_us: float  # CPU of every process per click served in the step
    keeps_up: bool


def _sustained(system: System, pids: dict[str, int], peak: float, step_seconds: int) -> list[Step]:
    """The steps of a search for the highest rate at which every consumer
    keeps up: a paced load (shared.bench.wrk) steps up from a tenth of the
    bare app's peak by a twentieth; a step keeps up if the gateway served
    the rate asked (97%) and the backlog at its end exceeds the one at its
    start by less than one second of its traffic. After the first step that
    does not, one more step halfway between it and the last that did; then
    the search ends. Each step prints where its clicks' cost went."""
    nats, gateway = system.env["LINKFLOW_NATS_URL"], system.gateway
    steps: list[Step] = []
    fraction, failed = 0.10, 0.0
    while fraction <= 0.8:
        target = peak * fraction
        start = asyncio.run(_backlog(nats))
        at_start, served_before = cpu(pids), redirects_served(gateway)
        reading = system.anatomy(pids)
        load = wrk(f"{gateway}/bench", step_seconds, 50, rate=target)
        after = system.anatomy(pids)
        growth = asyncio.run(_backlog(nats)) - start
        # The CPU of the step per click served in it: a click's cost at a
        # steady rate (a step that falls behind leaves some for later).
        clicks = redirects_served(gateway) - served_before
        costs = per_click(at_start, cpu(pids), clicks)
        complete = len(costs) == len(pids)
        cost = f"{sum(costs.values()):.0f} µs" if complete else "n/a"
        served = load.rps >= 0.97 * target
        keeps_up = served and growth < load.rps
        verdict = "keeps up" if keeps_up else "falls behind" if served else "rate not served"
        print(
            f"  sustained step {fraction:.3f} of the bare app ({target:.0f} req/s): "
            f"{load.rps:.0f} req/s, p99 {load.p99_ms:.2f} ms, CPU per click {cost} "
            f"(+ wrk {load.wrk_us_per_request:.0f} µs), "
            f"backlog {growth:+d}: {verdict}",
            flush=True,
        )
        print("\n".join(anatomy.table(reading, after, clicks, step_seconds)), flush=True)
        steps.append(
            Step(
                fraction, load.rps, load.p99_ms, sum(costs.values()) if complete else 0.0, keeps_up
            )
        )
        wait_until(lambda: asyncio.run(_backlog(nats)) == 0, 600, "drain")
        if keeps_up:
            if failed:
                break
            fraction += 0.05
        elif failed:
            break
        else:
            failed = fraction
            fraction -= 0.025
    best = max((step.rps for step in steps if step.keeps_up), default=0.0)
    print(f"  sustained rate: {best:.0f} req/s ({best / peak:.2f} of the bare app)", flush=True)
    return steps
