"""Redirects first: the work behind the redirect holds off while a gateway
says it is near its capacity (``redirects.busy``, core NATS), and catches
up after; JetStream keeps the clicks meanwhile.

On one machine (``linkflow up``, a compose host) the recorder, analytics and
PostgreSQL share the CPUs with the gateway and nats-server. A lower CPU
priority is not enough: a nice worker still runs in every gap the gateway
leaves, and nats-server, at full priority, does the delivery and ack work
for it while the gateway waits for its PubAcks (``linkflow bench --system``
figures in docs/benchmarks.md).

The price is analytics lag during a spike, and it is bounded: a worker that
is ``yield_lag`` behind (the oldest click it may not have handled is that
old) works again, busy gateway or not, so a spike that lasts hours leaves
the stats that far behind, not hours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared import metrics
from shared.contracts import INVALID, REDIRECTS_BUSY, RedirectsBusy
from shared.jetstream.loops import wait_or_stop

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder(RedirectsBusy).decode


class BusyState(msgspec.Struct, kw_only=True, frozen=True):
    """Whether a gateway says its redirects need the CPU (the click workers
    then hold off, within ``yield_lag_seconds``), and the latest to say so."""

    busy: bool
    gateway: Annotated[str | None, msgspec.Meta(description="host:port of the gateway")]
    load: Annotated[
        float | None, msgspec.Meta(description="the share of one CPU its event loop wanted")
    ]
    yield_lag_seconds: Annotated[
        float,
        msgspec.Meta(description="how far behind a worker works again anyway; 0: never holds"),
    ]


class BusyGateways:
    """What the worker loop asks before each fetch. One per process; with
    ``yield_lag`` 0 it never subscribes and never holds a worker."""

    def __init__(self, yield_lag: float) -> None:
        self.yield_lag = yield_lag
        # By gateway: until when (monotonic) its last signal holds, and that
        # signal. Only held ones are kept, the latest to speak last.
        self._gateways: dict[str, tuple[float, RedirectsBusy]] = {}
        self._sub: Subscription | None = None
        self._refused = False

    async def start(self, nc: Client) -> None:
        if self.yield_lag > 0:
            self._sub = await nc.subscribe(REDIRECTS_BUSY, cb=self._on_busy)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    async def _on_busy(self, msg: Msg) -> None:
        try:
            busy = _decode(msg.data)
        except INVALID as exc:
            # Fire-and-forget: nothing to dead-letter. Said once, not per message.
            if not self._refused:
                log.warning("ignoring a malformed %s message: %s", REDIRECTS_BUSY, exc)
                self._refused = True
            return
        now = time.monotonic()
        self._gateways = {
            g: v for g, v in self._gateways.items() if v[0] > now and g != busy.gateway
        }
        self._gateways[busy.gateway] = (now + busy.hold, busy)

    @property
    def _until(self) -> float:
        """Until when (monotonic) some gateway's hold lasts."""
        return max((until for until, _ in self._gateways.values()), default=0.0)

    @property
    def busy(self) -> bool:
        return time.monotonic() < self._until

    def view(self) -> BusyState:
        """For ``/api/pipeline``: whether a gateway says it is busy (so the
        click workers hold off, within their yield lag), and of the gateways
        whose hold lasts, the latest to say so."""
        now = time.monotonic()
        holding = [busy for until, busy in self._gateways.values() if until > now]
        last = holding[-1] if holding else None
        return BusyState(
            busy=last is not None,
            gateway=last.gateway if last else None,
            load=last.load if last else None,
            yield_lag_seconds=self.yield_lag,
        )

    def holds(self, behind_since: float) -> bool:
        """Whether a worker whose oldest unhandled click may be from
        ``behind_since`` (wall clock) should hold off now."""
        return self.busy and time.time() - behind_since < self.yield_lag

    async def turn(self, behind_since: float, stop: asyncio.Event, consumer: str) -> None:
        """Return when a worker may fetch: no gateway is busy, or the oldest
        click it may not have handled (stream time ``behind_since``, wall
        clock) is ``yield_lag`` old, or the service is stopping."""
        holding = False
        seconds = metrics.YIELD_SECONDS.labels(consumer)
        try:
            while not stop.is_set():
                wait = self._until - time.monotonic()
                room = self.yield_lag - (time.time() - behind_since)
                if wait <= 0 or room <= 0:
                    return
                if not holding:
                    holding = True
                    metrics.YIELDING.labels(consumer).set(1)
                started = time.monotonic()
                # Re-checked after: a newer signal may have moved _until on.
                await wait_or_stop(stop, min(wait, room))
                seconds.inc(time.monotonic() - started)  # a hold at most each time
        finally:
            if holding:
                metrics.YIELDING.labels(consumer).set(0)
