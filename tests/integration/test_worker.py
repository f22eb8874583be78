"""The shared worker loop's decisions, on a real JetStream consumer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence

import msgspec
import pytest
from nats.aio.client import Client

from shared.contracts import Click, encode, now
from shared.errors import PermanentError, TransientError
from shared.http import checks
from shared.jetstream import topology
from shared.jetstream.worker import Delivery, Worker, json_payload
from tests.conftest import TEST_WORKER, reset_jetstream
from tests.harness import eventually, running, soon


class Flaky:
    """Fails the clicks whose code says so; records every delivery it saw."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.done: set[str] = set()

    async def handle(self, batch: Sequence[Delivery[Click]]) -> Mapping[int, Exception]:
        failures: dict[int, Exception] = {}
        for i, d in enumerate(batch):
            self.seen[d.payload.id] += 1
            if d.payload.code == "always-fails":
                failures[i] = TransientError("still failing")
            elif d.payload.code == "bad-data":
                failures[i] = PermanentError("cannot ever work")
            elif d.payload.code == "fails-once" and self.seen[d.payload.id] == 1:
                failures[i] = TransientError("first time unlucky")
            else:
                self.done.add(d.payload.id)
        return failures


async def send(nc: Client, code: str, cid: str) -> None:
    c = Click(id=cid, code=code, ts=now())
    await nc.jetstream().publish(f"clicks.{code}", encode(c), headers={"Nats-Msg-Id": cid})


async def test_transient_retried_permanent_and_exhausted_dead_lettered(nc: Client) -> None:
    js = nc.jetstream()
    flaky = Flaky()
    worker = Worker(nc, topology.CLICK_RECORDER, TEST_WORKER, json_payload(Click), flaky.handle)
    async with running(worker.run):
        await send(nc, "fails-once", "c1")
        await send(nc, "always-fails", "c2")
        await send(nc, "bad-data", "c3")
        await send(nc, "fine", "c4")

        async def settled() -> bool:
            info = await js.consumer_info(topology.CLICKS, topology.CLICK_RECORDER.name)
            dlq = await js.stream_info(topology.DLQ)
            return info.num_ack_pending == 0 and info.num_pending == 0 and dlq.state.messages == 2

        await eventually(settled, 20, "every message settled")
    assert flaky.done == {"c1", "c4"}
    # Retried until MAX_ATTEMPTS, then dead-lettered; a permanent error once.
    assert flaky.seen["c1"] == 2
    assert flaky.seen["c2"] == TEST_WORKER.max_attempts
    assert flaky.seen["c3"] == 1
    sub = await js.pull_subscribe("dlq.>", durable=None, stream=topology.DLQ)
    dead = {
        (m.headers or {})["Linkflow-Original-Msg-Id"]: m.headers or {}
        for m in await sub.fetch(2, timeout=5)
    }
    assert dead["c2"]["Linkflow-Attempts"] == str(TEST_WORKER.max_attempts)
    assert dead["c2"]["Linkflow-Error"] == "TransientError: still failing"
    assert dead["c2"]["Linkflow-First-Failed-At"] < dead["c2"]["Linkflow-Failed-At"]
    assert dead["c3"]["Linkflow-Attempts"] == "1"


async def test_stop_hands_back_the_batch_fetched_ahead(nc: Client) -> None:
    # A 30 s ack wait: only the stopping worker's nak can bring messages back soon.
    slow_ack = msgspec.structs.replace(TEST_WORKER, bulk_limit=5, ack_wait=30.0)
    await reset_jetstream(nc, slow_ack)
    js = nc.jetstream()
    gate = asyncio.Event()
    handled: Counter[str] = Counter()

    async def handle(batch: Sequence[Delivery[Click]]) -> Mapping[int, Exception]:
        await gate.wait()
        handled.update(d.payload.id for d in batch)
        return {}

    for i in range(10):
        await send(nc, "ahead", f"a{i}")

    async def both_batches_out() -> bool:
        info = await js.consumer_info(topology.CLICKS, topology.CLICK_RECORDER.name)
        return info.num_ack_pending == 10

    first = Worker(nc, topology.CLICK_RECORDER, slow_ack, json_payload(Click), handle)
    async with running(first.run) as stop:
        # One batch in the handler, the next fetched while it waits.
        await eventually(both_batches_out, 10, "a batch in hand and one fetched ahead")
        stop.set()
        gate.set()
    assert sum(handled.values()) == 5

    second = Worker(nc, topology.CLICK_RECORDER, slow_ack, json_payload(Click), handle)
    async with running(second.run):

        async def all_handled() -> bool:
            return sum(handled.values()) == 10

        # Well inside the ack wait: the batch fetched ahead was given back.
        await eventually(all_handled, 10, "the other five to be redelivered")
    assert set(handled) == {f"a{i}" for i in range(10)}
    assert set(handled.values()) == {1}


async def test_the_consumer_config_is_the_one_source(nc: Client) -> None:
    """migrate made the consumer with max_deliver 3 (TEST_WORKER); a worker
    started with MAX_ATTEMPTS 8 in its environment still dead-letters on the
    third delivery, which is the server's last: counting to 8 it would nak
    that one and the click would never reach the DLQ."""
    js = nc.jetstream()
    flaky = Flaky()
    settings = msgspec.structs.replace(TEST_WORKER, max_attempts=8, ack_wait=30.0)
    worker = Worker(nc, topology.CLICK_RECORDER, settings, json_payload(Click), flaky.handle)
    async with running(worker.run):
        await send(nc, "always-fails", "one-source")

        async def dead_lettered() -> bool:
            return (await js.stream_info(topology.DLQ)).state.messages == 1

        await eventually(dead_lettered, 15, "the click in the DLQ")
    letter = await js.get_msg(topology.DLQ, 1)
    assert letter.headers is not None
    assert letter.headers["Linkflow-Attempts"] == "3"
    assert flaky.seen["one-source"] == 3


async def test_a_consumer_it_cannot_adopt_is_refused_in_one_line(
    nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer filtering other subjects (made by another version, or by
    hand) is not one to adopt: the worker consumes nothing, says why once,
    and readiness says it too."""
    js = nc.jetstream()
    consumer = topology.CLICK_RECORDER
    info = await js.consumer_info(consumer.stream, consumer.name)
    await js.delete_consumer(consumer.stream, consumer.name)
    await js.add_consumer(
        consumer.stream, dataclasses.replace(info.config, filter_subject="clicks.other.>")
    )
    await send(nc, "refused", "mismatch")
    flaky = Flaky()
    worker = Worker(nc, consumer, TEST_WORKER, json_payload(Click), flaky.handle)
    with caplog.at_level(logging.ERROR, logger="shared.jetstream.worker"):
        await asyncio.wait_for(worker.run(asyncio.Event()), 10)  # returns: refused
    lines = [r.getMessage() for r in caplog.records if r.name == "shared.jetstream.worker"]
    assert lines == [
        "click-recorder: refusing to consume: consumer click-recorder filters "
        "'clicks.other.>', linkflow expects 'clicks.>': run linkflow migrate"
    ]
    assert flaky.seen == {}
    reason = await checks.consumer(js, consumer)()
    assert reason is not None
    assert "run linkflow migrate" in reason


class Batches:
    """Records each batch the loop hands over: its click ids and when."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, list[str]]] = []

    async def handle(self, batch: Sequence[Delivery[Click]]) -> Mapping[int, Exception]:
        self.seen.append((time.monotonic(), [d.payload.id for d in batch]))
        return {}

    def handled(self) -> int:
        return sum(len(ids) for _, ids in self.seen)


async def test_after_a_short_batch_the_loop_lingers_but_not_after_a_full_one(
    nc: Client,
) -> None:
    linger = 4.0
    batches = Batches()
    settings = msgspec.structs.replace(TEST_WORKER, bulk_limit=50)
    worker = Worker(
        nc, topology.CLICK_RECORDER, settings, json_payload(Click), batches.handle, linger=linger
    )
    async with running(worker.run) as stop:
        # Idle: the first click is handed over as soon as it comes.
        sent = time.monotonic()
        await send(nc, "linger", "first")
        await eventually(soon(lambda: batches.handled() == 1), 10, "the first click")
        assert batches.seen[0][0] - sent < linger / 2
        # That batch was short: what comes next waits out the linger and is
        # handed over in as few batches as the bulk limit allows, the full
        # ones back to back.
        await asyncio.gather(*(send(nc, "linger", f"c{i}") for i in range(120)))
        await eventually(soon(lambda: batches.handled() == 121), 20, "the next 120")
        first, *rest = batches.seen
        assert [len(ids) for _, ids in rest] == [50, 50, 20]
        # (The linger counts from when the first fetch began, up to its 1 s
        # long-poll before the click came.)
        assert rest[0][0] - first[0] >= linger - 1.5
        assert rest[2][0] - rest[0][0] < linger / 2
        # Stopping does not wait out a linger, and nothing is fetched in it.
        await send(nc, "linger", "last")
        lingering = time.monotonic()
        stop.set()
    assert time.monotonic() - lingering < linger / 2
    assert "last" not in {i for _, ids in batches.seen for i in ids}
