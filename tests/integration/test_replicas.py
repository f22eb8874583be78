"""PubAck groups against the CLICKS stream's replicas, on a real three-node
JetStream cluster: one PubAck may stand for several clicks only while the
stream has one replica (services.link.replicas says why)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from services.link import replicas
from services.link.publisher import MAX_GROUP, ClickPublisher
from shared.cli.servers import NatsServer, free_ports
from shared.jetstream import bus, topology
from tests.harness import eventually
from tests.integration.test_click_wire import click
from tests.integration.test_gateway_faults import stored_click_ids


def three_nodes(tmp_path: Path, config: str = "") -> Iterator[list[NatsServer]]:
    """A three-node JetStream cluster on free ports (each node with ``config``)."""
    cluster_ports = free_ports(3)
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in cluster_ports)
    nodes: list[NatsServer] = []
    try:
        for i, port in enumerate(cluster_ports):
            args = ["-n", f"linkflow-{i}", "--cluster_name", "linkflow",
                    "--cluster", f"nats://127.0.0.1:{port}", "--routes", routes]  # fmt: skip
            node = NatsServer(tmp_path / f"node{i}", extra_args=args, config=config or None)
            nodes.append(node.start())
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    yield from three_nodes(tmp_path)


def clicks_stream(num_replicas: int) -> StreamConfig:
    config = next(s for s in topology.streams(3600) if s.name == topology.CLICKS)
    config.num_replicas = num_replicas
    return config


async def created(js: JetStreamContext, config: StreamConfig) -> bool:
    # Refused until the cluster has elected its meta leader.
    with contextlib.suppress(Exception):
        await js.add_stream(config)
        return True
    return False


async def test_a_replicated_stream_gets_a_puback_for_every_click(
    cluster: list[NatsServer],
) -> None:
    url = cluster[0].url
    nc = await bus.connect(url, "setup", forever=False)
    js = nc.jetstream()
    # A core subscriber sees every click with the reply subject it was sent
    # with: one there means that click asked for its own PubAck.
    replies: list[str] = []

    async def seen(msg: object) -> None:
        replies.append(msg.reply)  # type: ignore[attr-defined]

    await nc.subscribe("clicks.>", cb=seen)
    await eventually(lambda: created(js, clicks_stream(3)), 30, "an R3 CLICKS stream")
    publisher = ClickPublisher(url, 5.0)  # groups, until told otherwise
    await publisher.start()
    sent = [click() for _ in range(40)]
    later = [click() for _ in range(40)]
    try:
        await replicas.check(js, publisher)
        assert publisher.max_group == 1
        await asyncio.gather(*(publisher.publish(c) for c in sent))

        async def all_seen() -> bool:
            return len(replies) == 40

        await eventually(all_seen, 10, "40 clicks on the subject")
        assert all(replies)

        # Back to one replica (an operator's `nats stream edit`): groups again.
        await js.update_stream(clicks_stream(1))
        await replicas.check(js, publisher)
        assert publisher.max_group == MAX_GROUP
        replies.clear()
        await asyncio.gather(*(publisher.publish(c) for c in later))
        await eventually(all_seen, 10, "40 more clicks on the subject")
        assert 0 < sum(1 for r in replies if r) < 40
    finally:
        await publisher.stop()
        await nc.close()
    assert sorted(await stored_click_ids(url)) == sorted(c.id for c in sent + later)


async def test_a_stream_that_cannot_be_read_keeps_a_puback_per_click(
    cluster: list[NatsServer],
) -> None:
    url = cluster[0].url
    nc = await bus.connect(url, "setup", forever=False)
    publisher = ClickPublisher(url, 5.0, max_group=1)  # as the gateway starts
    try:
        await replicas.check(nc.jetstream(), publisher)  # no CLICKS stream yet
        assert publisher.max_group == 1
        await eventually(lambda: created(nc.jetstream(), clicks_stream(1)), 30, "CLICKS")
        await replicas.check(nc.jetstream(), publisher)
        assert publisher.max_group == MAX_GROUP
    finally:
        await nc.close()
