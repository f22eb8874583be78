"""Worker faults on a real consumer: slow handlers and abandoned messages."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence

from nats.aio.client import Client

from shared.contracts import Click, encode, now
from shared.jetstream import topology
from shared.jetstream.pull import Puller
from shared.jetstream.rescue import rescue_worker
from shared.jetstream.worker import Delivery, Worker, json_payload
from tests.conftest import TEST_WORKER
from tests.harness import eventually, running


async def send(nc: Client, cid: str) -> None:
    c = Click(id=cid, code="fault", ts=now())
    await nc.jetstream().publish("clicks.fault", encode(c), headers={"Nats-Msg-Id": cid})


async def test_handler_slower_than_ack_wait_is_not_redelivered(nc: Client) -> None:
    seen: Counter[str] = Counter()

    async def slow(batch: Sequence[Delivery[Click]]) -> Mapping[int, Exception]:
        for d in batch:
            seen[d.payload.id] += 1
        # Three ack waits (1 s each in tests): a slow database.
        await asyncio.sleep(3 * TEST_WORKER.ack_wait)  # wait-ok: the slowness under test
        return {}

    js = nc.jetstream()
    for i in range(20):
        await send(nc, f"slow-{i}")
    # Two workers share the consumer: a redelivery would go to the idle one.
    worker = Worker(nc, topology.CLICK_RECORDER, TEST_WORKER, json_payload(Click), slow)
    async with running(worker.run, copies=2):

        async def all_acked() -> bool:
            info = await js.consumer_info(topology.CLICKS, topology.CLICK_RECORDER.name)
            return info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(all_acked, 30, "the slow batch acked")
    info = await js.consumer_info(topology.CLICKS, topology.CLICK_RECORDER.name)
    assert info.num_redelivered == 0
    assert set(seen) == {f"slow-{i}" for i in range(20)}
    assert set(seen.values()) == {1}


async def test_abandoned_on_last_delivery_lands_in_dlq_exactly_once(nc: Client) -> None:
    js = nc.jetstream()
    await send(nc, "abandoned")
    # A worker that crashes while handling: it takes the message and never
    # settles it, on every delivery up to max_deliver.
    crashing = Puller(nc, topology.CLICKS, topology.CLICK_RECORDER.name)
    await crashing.start()
    for _ in range(TEST_WORKER.max_attempts):
        msgs = await crashing.fetch(1, wait=5)
        assert len(msgs) == 1
    await crashing.stop()

    # The worker service comes back. Its next pull makes the server notice
    # the message is out of deliveries and publish the advisory, which the
    # ADVISORIES stream keeps for the service's rescuer.
    seen: list[str] = []

    async def handler(batch: Sequence[Delivery[Click]]) -> Mapping[int, Exception]:
        seen.extend(d.payload.id for d in batch)
        return {}

    worker = Worker(nc, topology.CLICK_RECORDER, TEST_WORKER, json_payload(Click), handler)
    rescuer = rescue_worker(nc, topology.CLICK_RECORDER, TEST_WORKER)
    async with running(worker.run), running(rescuer.run):

        async def dead() -> bool:
            return (await js.stream_info(topology.DLQ)).state.messages == 1

        await eventually(dead, 15, "the abandoned click in the DLQ")
        # The same advisory again (a redelivery) adds nothing.
        sub = await js.pull_subscribe(
            f"{topology.MAX_DELIVERIES}.>", durable=None, stream=topology.ADVISORIES
        )
        advisory = (await sub.fetch(1, timeout=5))[0]
        await js.publish(advisory.subject, advisory.data)

        async def handled() -> bool:
            info = await js.consumer_info(
                topology.ADVISORIES, topology.rescuer(topology.CLICK_RECORDER).name
            )
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(handled, 15, "the repeated advisory handled")
    assert seen == []  # never delivered a fourth time
    assert (await js.stream_info(topology.DLQ)).state.messages == 1
    letter = await js.get_msg(topology.DLQ, (await js.stream_info(topology.DLQ)).state.last_seq)
    headers = letter.headers or {}
    assert headers["Linkflow-Original-Msg-Id"] == "abandoned"
    assert headers["Linkflow-Attempts"] == str(TEST_WORKER.max_attempts)
    assert headers["Linkflow-Error"].startswith("Abandoned: delivered 3 times")
