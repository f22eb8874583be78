"""``linkflow bench --webhooks``: the webhooks service in the whole system
(:func:`shared.bench.system.running`, all five services as ``linkflow up``
runs them), delivering to a local receiver (:mod:`shared.bench.receiver`,
keep-alive, answering 204).

Each round, alternated in one run:

1. the spike ratio with no endpoint (no ``webhooks-clicks`` consumer): wrk
   against the bare app, then against the gateway; then every consumer
   catches up;
2. one endpoint subscribed to ``link.clicked`` at the receiver; ``clicks``
   redirects in one second (a paced wrk); deliveries per second from the
   first distinct ``webhook-id`` to arrive to the last, all of them
   required (none missing), then nothing pending;
3. the spike ratio again with that endpoint subscribed; then the endpoint
   is deleted (its pending deliveries with it) and every consumer, the
   webhooks service's own included, catches up.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from dataclasses import dataclass

from nats.js.errors import NotFoundError

from shared import roster
from shared.bench.client import Client
from shared.bench.drain import asgi
from shared.bench.receiver import Tally, decode_tally
from shared.bench.system import System, caught_up, cpu, per_click, redirects_served, running
from shared.bench.wrk import Load, wrk
from shared.cli.servers import free_port, port_open, wait_until
from shared.jetstream import bus, topology

# A receiver on this machine: plain HTTP to a loopback address.
LOCAL = {"LINKFLOW_WEBHOOKS_ALLOW_HTTP": "true", "LINKFLOW_WEBHOOKS_ALLOW_PRIVATE": "true"}
PENDING = re.compile(r"^linkflow_webhook_pending\{[^}]*\} (\S+)$", re.M)
# No new delivery for this long: the rest are taken as missing.
STALL_SECONDS = 30.0


def pending(metrics: str) -> int:
    """Deliveries waiting for an attempt, over every endpoint, from the
    webhooks service's /metrics."""
    return sum(int(float(n)) for n in PENDING.findall(metrics))


def spread(values: list[float], fmt: str = ".2f") -> str:
    return (
        f"median {statistics.median(values):{fmt}} "
        f"(min {min(values):{fmt}}, max {max(values):{fmt}})"
    )


@dataclass(frozen=True)
class Spike:
    bare: Load
    gateway: Load

    @property
    def ratio(self) -> float:
        return self.gateway.rps / self.bare.rps

    def describe(self) -> str:
        return (
            f"bare {self.bare.rps:,.0f}, gateway {self.gateway.rps:,.0f} req/s "
            f"(p99 {self.gateway.p99_ms:.2f} ms): ratio {self.ratio:.2f}"
        )


@dataclass(frozen=True)
class Delivered:
    expected: int  # redirects served, each a click for the endpoint
    tally: Tally
    # Each process's CPU from the paced load's start to the last delivery, in
    # µs per delivery: where a round's time went.
    costs: dict[str, float]

    @property
    def missing(self) -> int:
        return max(self.expected - self.tally.distinct, 0)

    def describe(self) -> str:
        t = self.tally
        return (
            f"{t.distinct:,} webhook-ids for {self.expected:,} clicks, in {t.seconds:.2f} s: "
            f"{t.rate:,.0f} deliveries/s ({self.missing} missing, {t.duplicates} duplicates; "
            f"longest pause {t.gap:.2f} s, without it {t.rate_but_gap:,.0f}/s)\n"
            "             CPU per delivery: "
            + ", ".join(f"{name} {us:.0f} µs" for name, us in self.costs.items())
        )


def _spike(system: System, seconds: int, connections: int) -> Spike:
    return Spike(
        wrk(system.bare, seconds, connections),
        wrk(f"{system.gateway}/bench", seconds, connections),
    )


async def _consumer_exists(nats_url: str, consumer: topology.Consumer) -> bool:
    nc = await bus.connect(nats_url, "bench-consumer", forever=False)
    try:
        await nc.jetstream().consumer_info(consumer.stream, consumer.name)
        return True
    except NotFoundError:
        return False
    finally:
        await nc.close()


def _clicks_consumer(system: System, exists: bool) -> None:
    nats = system.env["LINKFLOW_NATS_URL"]
    wait_until(
        lambda: asyncio.run(_consumer_exists(nats, topology.WEBHOOKS_CLICKS)) == exists,
        30,
        f"consumer webhooks-clicks {'created' if exists else 'deleted'}",
    )


def _catch_up(system: System) -> None:
    def done() -> bool:
        with Client() as http:
            text = http.get(f"{system.service_url(roster.WEBHOOKS)}/metrics").text
        return pending(text) == 0 and caught_up(system.env, redirects_served(system.gateway))

    wait_until(done, 600, "every consumer to catch up and no delivery pending")


def _tally(receiver: str) -> Tally:
    with Client() as http:
        return decode_tally(http.get(f"{receiver}/tally").raise_for_status().text)


def _deliveries(
    system: System, receiver: str, receiver_pid: int, clicks: int, connections: int
) -> Delivered:
    """``clicks`` redirects within a second, then wait until the receiver has
    had one delivery for each (or none arrives for STALL_SECONDS)."""
    with Client() as http:
        http.post(f"{receiver}/reset").raise_for_status()
    pids = {**system.pids(), "receiver": receiver_pid}
    cpu_before = cpu(pids)
    before = redirects_served(system.gateway)
    wrk(f"{system.gateway}/bench", 1, connections, rate=clicks)
    expected = redirects_served(system.gateway) - before
    seen, progress = 0, time.monotonic()
    while seen < expected and time.monotonic() - progress < STALL_SECONDS:
        time.sleep(0.2)  # wait-ok: a poll interval, the loop stops on a stall
        now = _tally(receiver).distinct
        if now > seen:
            seen, progress = now, time.monotonic()
    costs = per_click(cpu_before, cpu(pids), seen)
    if seen >= expected:
        _catch_up(system)
    return Delivered(expected, _tally(receiver), costs)


def run_webhooks(seconds: int, connections: int, rounds: int, clicks: int) -> int:
    with running(LOCAL) as system:
        port = free_port()
        receiver = f"http://127.0.0.1:{port}"
        # Nice as the workers: a receiver stands for a server elsewhere,
        # and must take no CPU from the gateway's spike.
        served = asgi(
            "shared.bench.receiver:app",
            port,
            system.env,
            system.home / "receiver.log",
            nice=roster.BACKGROUND,
        )
        try:
            wait_until(lambda: port_open(port), 30, "the receiver")
            served.to_background()
            return _rounds(system, receiver, served.pid, seconds, connections, rounds, clicks)
        finally:
            served.stop()


def _rounds(
    system: System,
    receiver: str,
    receiver_pid: int,
    seconds: int,
    connections: int,
    rounds: int,
    clicks: int,
) -> int:
    api = f"{system.service_url(roster.WEBHOOKS)}/api/webhooks"
    print(
        f"bench --webhooks: linkflow up, all five services; wrk -t1 -c{connections} "
        f"{seconds}s spikes; {clicks:,} clicks in 1 s to one endpoint on link.clicked",
        flush=True,
    )
    without, with_one, rates, quotients = [], [], [], []
    missing = 0
    # Deleting an endpoint deletes its pending deliveries: a spike's worth.
    with Client(headers={"authorization": f"Bearer {system.key}"}, timeout=120) as http:
        for i in range(rounds):
            none = _spike(system, seconds, connections)
            _catch_up(system)
            made = http.post(api, json={"url": f"{receiver}/hook", "events": ["link.clicked"]})
            endpoint = json.loads(made.raise_for_status().text)["id"]
            _clicks_consumer(system, exists=True)
            delivered = _deliveries(system, receiver, receiver_pid, clicks, connections)
            one = _spike(system, seconds, connections)
            http.delete(f"{api}/{endpoint}").raise_for_status()
            _clicks_consumer(system, exists=False)
            _catch_up(system)
            without.append(none.ratio)
            with_one.append(one.ratio)
            quotients.append(one.ratio / none.ratio)
            rates.append(delivered.tally.rate)
            missing += delivered.missing
            print(
                f"  round {i + 1}: no endpoint: {none.describe()}\n"
                f"           deliveries: {delivered.describe()}\n"
                f"           one endpoint on link.clicked: {one.describe()}; "
                f"{quotients[-1]:.2f} of the ratio without",
                flush=True,
            )
    rate, quotient = statistics.median(rates), statistics.median(quotients)
    print(
        f"  deliveries/s {spread(rates, ',.0f')}\n"
        f"  spike ratio, no endpoint {spread(without)}; one endpoint {spread(with_one)}\n"
        f"  with/without {spread(quotients)}",
        flush=True,
    )
    checks = [
        (f"deliveries/s {rate:,.0f} >= 1,000", rate >= 1000),
        (f"none missing ({missing})", missing == 0),
        (f"spike ratio with clicks subscribed {quotient:.2f} >= 0.80 of without", quotient >= 0.8),
    ]
    verdicts = "; ".join(f"{text}: {'met' if ok else 'MISSED'}" for text, ok in checks)
    print(f"bench --webhooks: targets: {verdicts}", flush=True)
    return 0
