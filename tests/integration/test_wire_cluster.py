"""The click connection (services.link.wire) on a real three-node cluster:
it learns the members from the server's INFO, outlives the node it was given,
and moves off a node in lame duck mode before that node closes it, under
load, with every click stored once and no redirect waiting for the move."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.link.clicks import OutgoingClick
from services.link.publisher import ClickPublisher
from services.link.spool import Spool
from shared.cli.servers import NatsServer
from shared.jetstream import bus, topology
from tests.harness import eventually, soon
from tests.integration.test_click_wire import click
from tests.integration.test_gateway_faults import stored_click_ids
from tests.integration.test_replicas import clicks_stream, created, three_nodes

# The shortest lame duck the server accepts (30 s; the grace period must be
# shorter): it announces lame duck mode, waits out the grace period, then
# closes its clients. The grace period is the time a move has to fit in.
LAME_DUCK = 'lame_duck_duration: "30s"\nlame_duck_grace_period: "3s"\n'


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    yield from three_nodes(tmp_path, LAME_DUCK)


async def clicks_on(nodes: list[NatsServer], replicas: int) -> int:
    """Create CLICKS; the index of the node that leads it."""
    nc = await bus.connect(nodes[0].url, "setup", forever=False)
    try:
        js = nc.jetstream()
        await eventually(lambda: created(js, clicks_stream(replicas)), 30, "the CLICKS stream")
        info = await js.stream_info(topology.CLICKS)
    finally:
        await nc.close()
    assert info.cluster is not None
    return [f"linkflow-{i}" for i in range(len(nodes))].index(info.cluster.leader)


def spooled() -> float:
    return REGISTRY.get_sample_value("linkflow_spool_written_total") or 0.0


async def test_one_url_is_enough_to_learn_the_cluster_and_outlive_its_node(
    cluster: list[NatsServer], tmp_path: Path
) -> None:
    # Three replicas: the stream outlives the node the gateway was given.
    await clicks_on(cluster, 3)
    spool = Spool(tmp_path / "spool", 1 << 20)
    publisher = ClickPublisher(cluster[0].url, 2.0, spool, max_group=1)
    await publisher.start()
    link = publisher.connection
    sent = [click() for _ in range(40)]
    try:
        everyone = {("127.0.0.1", node.port) for node in cluster}
        await eventually(
            soon(lambda: {(s.host, s.port) for s in link.servers} == everyone),
            10,
            "the pool to hold every node",
        )
        assert len(link.servers) == 3  # each once, though every INFO names them all
        await asyncio.gather(*(publisher.publish(c) for c in sent[:20]))

        cluster[0].stop()

        def elsewhere() -> bool:
            current = link.current
            return current is not None and current.server.port != cluster[0].port

        await eventually(soon(elsewhere), 15, "a connection to another node")
        # Clicks the stream could not take while it elected a leader are
        # spooled, then replayed: all are stored, once.
        await asyncio.gather(*(publisher.publish(c) for c in sent[20:]))
        await eventually(soon(lambda: spool.records == 0), 20, "the spool to be replayed")
    finally:
        await publisher.stop()
    stored = await stored_click_ids(cluster[1].url)
    assert sorted(stored) == sorted(c.id for c in sent)


async def test_a_node_in_lame_duck_mode_is_left_before_it_closes_the_connection(
    cluster: list[NatsServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.link.wire")
    # One replica, on a node the gateway is not given: the node leaving
    # stops its JetStream first, and this test is about the connection.
    leader = await clicks_on(cluster, 1)
    leaving = cluster[(leader + 1) % 3]
    spool = Spool(tmp_path / "spool", 1 << 20)
    publisher = ClickPublisher(leaving.url, 5.0, spool)
    await publisher.start()
    link = publisher.connection
    first = link.current
    assert first is not None
    await eventually(soon(lambda: len(link.servers) == 3), 10, "the pool to hold every node")
    spooled_before = spooled()

    sent: list[OutgoingClick] = []
    slowest = 0.0
    disconnected = 0
    stop = asyncio.Event()
    held: list[bool] = []
    # Changes when the test holds the old node's PubAcks back and when it
    # lets them through: a call that saw either waited on the test.
    phase = 0

    def hold(_: object) -> None:
        nonlocal phase
        phase += 1
        # The old node's PubAcks are read only after the move, as from a
        # busy node: groups still wait for them when the connection moves.
        assert first.transport is not None
        first.transport.pause_reading()
        held.append(link.current is first)
        # And a visitor's click in this very turn, still to the old node.
        visitors.append(asyncio.create_task(visitor(once=True)))

    async def visitor(once: bool = False) -> None:
        # A redirect: publish, then answer; measured from the caller's side.
        nonlocal slowest, disconnected
        while not stop.is_set():
            c = click()
            sent.append(c)
            started, seen = time.perf_counter(), phase
            await publisher.publish(c)
            if phase == seen and phase != 1:
                slowest = max(slowest, time.perf_counter() - started)
            if not publisher.connected:
                disconnected += 1
            if once:
                return
            # Flat out from the lame duck notice until the old connection is
            # closed: groups are in flight on both when it closes.
            if not first.lame.done() or first.closed.done():
                await asyncio.sleep(0.01)  # wait-ok: a visitor's pace, not a synchronisation

    visitors = [asyncio.create_task(visitor()) for _ in range(16)]
    first.lame.add_done_callback(hold)
    try:
        await eventually(soon(lambda: len(sent) >= 1000), 20, "1,000 clicks")
        os.kill(leaving.pid, signal.SIGUSR2)  # lame duck mode

        log = (leaving.store_dir / "nats-server.log").read_text
        await eventually(soon(lambda: link.current is not first), 10, "a move to another node")
        assert held == [True]
        assert first.unanswered > 0
        assert first.transport is not None
        first.transport.resume_reading()
        phase += 1
        assert "Entering lame duck mode" in log()
        moved_at = len(sent)
        # Closed by the gateway once its PubAcks came, not by the server.
        await eventually(soon(lambda: first.closed.done()), 5, "the old connection closed")
        assert "Closing existing clients" not in log()
        await eventually(soon(lambda: len(sent) >= moved_at + 1000), 20, "1,000 more clicks")
    finally:
        stop.set()
        await asyncio.gather(*visitors)
        await publisher.stop()
    # Past the grace period the node closed its clients (none of ours) and exited.
    await eventually(soon(lambda: not leaving.running), 15, "the node to exit")

    assert disconnected == 0
    assert spooled() == spooled_before  # nothing waited for the spool
    assert spool.records == 0
    assert slowest < 0.05, f"a publish took {slowest * 1000:.0f} ms"
    assert "lame duck mode; clicks go to" in caplog.text
    assert "lost the connection" not in caplog.text
    stored = await stored_click_ids(cluster[leader].url)
    assert len(stored) == len(sent)
    assert set(stored) == {c.id for c in sent}
