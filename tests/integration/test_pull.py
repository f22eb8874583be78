"""Batched acks on a real JetStream consumer: ``ack_all`` settles a whole
fetched batch with one plain publish per message (nats-py's public
``publish``; shared/jetstream/pull.py says why not its private calls)."""

from __future__ import annotations

from nats.aio.client import Client

from shared.contracts import Click, encode, now
from shared.jetstream import topology
from shared.jetstream.pull import Puller, ack_all
from tests.harness import eventually


async def test_ack_all_settles_every_message(nc: Client) -> None:
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

    await ack_all(nc, msgs)

    async def settled() -> bool:
        info = await js.consumer_info(consumer.stream, consumer.name)
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        return info.num_ack_pending == 0 and floor == 25

    await eventually(settled, 10, "all 25 acked")
