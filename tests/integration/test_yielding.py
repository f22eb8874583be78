"""Redirects first: a worker holds off while a gateway says ``redirects.busy``,
within its ``yield_lag``, and catches up after; the gateway says it when its
event loop is loaded. Real nats-server, the real worker loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from prometheus_client import REGISTRY

from services.link.load import LoadReporter
from shared.contracts import REDIRECTS_BUSY, Click, RedirectsBusy
from shared.jetstream import topology
from shared.jetstream.worker import Delivery, Worker, json_payload
from shared.jetstream.yielding import BusyGateways
from tests.conftest import TEST_WORKER
from tests.harness import eventually, running, soon
from tests.integration.test_worker import send

CONSUMER = topology.CLICK_RECORDER.name


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@contextlib.asynccontextmanager
async def busy_gateway(nc: Client) -> AsyncIterator[None]:
    """A gateway that stays busy, as services.link.load says it: every quarter second."""

    async def say() -> None:
        # A hold of 2 s: a test loop stalled for a second must not end it.
        busy = msgspec.json.encode(RedirectsBusy(gateway="test:1", load=0.97, hold=2.0))
        while True:
            await nc.publish(REDIRECTS_BUSY, busy)
            await asyncio.sleep(0.25)  # wait-ok: the signal's own cadence

    task = asyncio.create_task(say())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Handled:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    async def handle(self, batch: Sequence[Delivery[Click]]) -> Mapping[int, Exception]:
        for d in batch:
            self.at[d.payload.id] = time.monotonic()
        return {}


async def listened(nc: Client, subject: str) -> bool:
    """Whether any subscription anywhere takes ``subject``: the server
    answers a request "no responders" at once when none does."""
    try:
        await nc.request(subject, b"{}", timeout=2)
    except NoRespondersError:
        return False
    except TimeoutError:
        return True  # taken (nats-py raises a subclass), though nobody answers
    return True


async def held(consumer: str = CONSUMER) -> bool:
    return sample("linkflow_worker_yielding", {"consumer": consumer}) == 1


async def test_worker_holds_off_while_a_gateway_is_busy_then_catches_up(
    nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    yields = BusyGateways(yield_lag=60)
    await yields.start(nc)
    handled = Handled()
    worker = Worker(
        nc, topology.CLICK_RECORDER, TEST_WORKER, json_payload(Click), handled.handle, yields
    )
    before = sample("linkflow_worker_yield_seconds_total", {"consumer": CONSUMER})
    try:
        async with running(worker.run):
            await send(nc, "calm", "c0")
            await eventually(soon(lambda: "c0" in handled.at), 10, "a calm click")
            # Bad input on the subject is ignored (said once), never a hold.
            with caplog.at_level(logging.WARNING):
                await nc.publish(REDIRECTS_BUSY, b'{"gateway": "x", "load": 1, "hold": 3600}')
                await nc.publish(REDIRECTS_BUSY, b"not json")

                def warned() -> list[str]:
                    return [r.message for r in caplog.records if REDIRECTS_BUSY in r.message]

                # One subscription's messages are handled in order: once the
                # first is refused, both were.
                await eventually(soon(lambda: bool(warned())), 10, "the refusal")
            assert warned() == [
                "ignoring a malformed redirects.busy message: "
                "Expected `float` <= 10.0 - at `$.hold`"
            ]
            assert not yields.busy
            async with busy_gateway(nc):
                await eventually(held, 10, "the worker to hold off")
                for i in range(100):
                    await send(nc, "spike", f"s{i}")
                info = await js.consumer_info(topology.CLICKS, CONSUMER)
                # Still holding, so not one of them was even delivered.
                assert await held()
                assert (info.num_pending, info.num_ack_pending) == (100, 0)
                assert not any(k.startswith("s") for k in handled.at)
            # No signal after this: none of them was handled while one lasted.
            quiet = time.monotonic()
            # The gateway is calm again: every click handled, once.
            await eventually(soon(lambda: len(handled.at) == 101), 15, "catch-up")
    finally:
        await yields.stop()
    assert min(handled.at[f"s{i}"] for i in range(100)) > quiet
    assert not await held()
    assert sample("linkflow_worker_yield_seconds_total", {"consumer": CONSUMER}) > before
    info = await js.consumer_info(topology.CLICKS, CONSUMER)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_worker_yield_lag_behind_works_though_the_gateway_stays_busy(
    nc: Client,
) -> None:
    yields = BusyGateways(yield_lag=4.0)
    await yields.start(nc)
    handled = Handled()
    worker = Worker(
        nc, topology.CLICK_RECORDER, TEST_WORKER, json_payload(Click), handled.handle, yields
    )
    try:
        async with running(worker.run), busy_gateway(nc):
            await eventually(held, 10, "the worker to hold off")
            sent = time.monotonic()
            for i in range(20):
                await send(nc, "long-spike", f"l{i}")
            await eventually(soon(lambda: len(handled.at) == 20), 15, "clicks handled while busy")
            assert yields.busy  # the gateway never stopped saying so
    finally:
        await yields.stop()
    # Held for about yield_lag (counted from when it last had everything in hand).
    assert min(handled.at.values()) - sent > 2.0


async def test_without_a_yield_lag_a_worker_never_holds_off(nc: Client) -> None:
    """With ``yield_lag`` 0 nothing listens to ``redirects.busy`` at all: the
    server finds no interest in the subject (a request gets "no responders"),
    and the clicks are handled while a gateway says it is busy."""
    yields = BusyGateways(yield_lag=0)
    await yields.start(nc)
    handled = Handled()
    worker = Worker(
        nc, topology.CLICK_RECORDER, TEST_WORKER, json_payload(Click), handled.handle, yields
    )
    try:
        async with running(worker.run), busy_gateway(nc):
            assert not await listened(nc, REDIRECTS_BUSY), "something subscribed"
            for i in range(20):
                await send(nc, "spike", f"n{i}")
            await eventually(soon(lambda: len(handled.at) == 20), 10, "every click")
            assert not await held()
    finally:
        await yields.stop()


async def test_the_gateway_says_busy_while_its_event_loop_is_loaded(nc: Client) -> None:
    said: list[RedirectsBusy] = []

    async def heard(msg: Msg) -> None:
        said.append(msgspec.json.decode(msg.data, type=RedirectsBusy))

    sub = await nc.subscribe(REDIRECTS_BUSY, cb=heard)
    reporter = LoadReporter(nc, "gw:8080", busy_above=0.7)
    async with running(reporter.loop()):
        # Idle: a loop that waits wants almost none of a CPU.
        await eventually(soon(lambda: 0 < reporter.load < 0.3), 10, "an idle load")
        assert said == []
        deadline = time.monotonic() + 10
        while not said and time.monotonic() < deadline:
            # Busy: the loop computes for 50 ms at a time, yielding between.
            spin = time.monotonic() + 0.05
            while time.monotonic() < spin:
                pass
            await asyncio.sleep(0)  # wait-ok: lets the loop sample between spins
    await sub.unsubscribe()
    assert said, "no redirects.busy while the loop was loaded"
    assert said[0].gateway == "gw:8080"
    assert said[0].load >= 0.7
    assert said[0].hold == 1.0
    assert sample("linkflow_gateway_load") > 0


async def test_busy_above_is_checked_at_start() -> None:
    from services.link.settings import Settings
    from shared.settings import SettingsError, load

    with pytest.raises(
        SettingsError, match=r"^LINKFLOW_LINK_BUSY_ABOVE='1\.5' is not a number from 0 to 1$"
    ):
        load(Settings, "link", {"LINKFLOW_LINK_BUSY_ABOVE": "1.5"})
    assert load(Settings, "link", {}).busy_above == 0.85
