"""Batched acks on a real JetStream consumer, through nats-py's private
frame queue and through the public publish it falls back to."""

from __future__ import annotations

from typing import cast

import pytest
from nats.aio.client import Client

from shared.contracts import Click, encode, now
from shared.jetstream import topology
from shared.jetstream.pull import Puller, ack_all
from tests.harness import eventually


class PublicOnly:
    """A client as a nats-py without the private calls would look to ack_all."""

    def __init__(self, nc: Client) -> None:
        self.publish = nc.publish


@pytest.mark.parametrize("client", ["nats-py", "public-only"])
async def test_ack_all_settles_every_message(nc: Client, client: str) -> None:
    js = nc.jetstream()
    consumer = topology.CLICK_RECORDER
    for i in range(25):
        c = Click(id=f"ack-{i}", code="acks", ts=now())
        await js.publish("clicks.acks", encode(c), headers={"Nats-Msg-Id": c.id})
    puller = Puller(nc, consumer.stream, consumer.name)
    await puller.start()
    try:
        msgs = await puller.fetch(25, wait=5.0)
    finally:
        await puller.stop()
    assert len(msgs) == 25
    info = await js.consumer_info(consumer.stream, consumer.name)
    assert info.num_ack_pending == 25

    acker = nc if client == "nats-py" else cast(Client, PublicOnly(nc))
    await ack_all(acker, msgs)

    async def settled() -> bool:
        info = await js.consumer_info(consumer.stream, consumer.name)
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        return info.num_ack_pending == 0 and floor == 25

    await eventually(settled, 10, "all 25 acked")
