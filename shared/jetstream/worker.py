"""The one JetStream worker loop every worker service uses.

A service supplies a payload type and a batch handler; the loop fetches up to
``BULK_LIMIT`` messages (after a short batch, not before ``linger`` has
passed, so that a steady trickle still comes in large batches), decodes
them, calls the handler and then decides for each message, explicitly:

- ack: the handler succeeded for it (acks go out only after the handler's
  commit, so a crash before that means redelivery, never loss);
- term to the DLQ: it cannot decode, fails validation, raised
  :class:`PermanentError`, is older than ``MAX_TTL``, or failed on its
  ``MAX_ATTEMPTS``-th delivery;
- nak with exponential backoff: it raised :class:`TransientError` (or an
  unexpected exception) before its last attempt;
- hold: the handler raised :class:`Unavailable` for the whole batch (the
  database is down). That is not the messages' fault, so the loop keeps the
  batch, signals ``in_progress`` so JetStream does not hand it to another
  worker, and retries it with backoff without spending delivery attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from shared import metrics
from shared.contracts import HDR_REQUEST_ID, INVALID
from shared.errors import PermanentError, TransientError
from shared.jetstream import topology
from shared.jetstream.dlq import dead_letter
from shared.jetstream.loops import wait_or_stop
from shared.jetstream.pull import Puller, ack_all, in_progress_all
from shared.jetstream.topology import Consumer
from shared.jetstream.yielding import BusyGateways
from shared.settings import WorkerSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class Unavailable(TransientError):
    """A dependency the whole batch needs is down: hold and retry the batch."""


# What a KV get or put raises while NATS is unreachable: a handler turns it
# into Unavailable (hold the batch), not into the messages' failure.
NATS_UNAVAILABLE: Final = (ConnectionClosedError, NatsTimeoutError, NoRespondersError)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    msg: Msg
    payload: T


# The handler returns the failures by index into the batch; every other
# delivery counts as handled. Raising fails the whole batch.
BatchHandler = Callable[[Sequence[Delivery[T]]], Awaitable[Mapping[int, Exception]]]


def request_id(msg: Msg) -> str | None:
    """The id of the request a message came from (``X-Request-Id``), for its log lines."""
    return (msg.headers or {}).get(HDR_REQUEST_ID)


def json_payload(payload_type: type[T]) -> Callable[[Msg], T]:
    """Decode a message's JSON body as ``payload_type`` (validation included)."""
    decoder = msgspec.json.Decoder(payload_type)

    def decode(msg: Msg) -> T:
        return decoder.decode(msg.data)

    return decode


class Worker(Generic[T]):
    def __init__(
        self,
        nc: Client,
        consumer: Consumer,
        settings: WorkerSettings,
        decode: Callable[[Msg], T],
        handler: BatchHandler[T],
        yields: BusyGateways | None = None,
        linger: float = 0.0,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._consumer = consumer
        self._settings = settings
        self._decode = decode
        self._handler = handler
        self._first_failed: dict[int, float] = {}
        # Redirects first (shared.jetstream.yielding): held off while a
        # gateway is busy, as long as the oldest click this loop may not have
        # handled, stored at ``_behind_since`` (wall clock), is recent enough.
        self._yields = yields
        # A few large batches cost PostgreSQL, NATS and Python far less per
        # click than many small ones, for a bounded delay in the analytics.
        self._linger = linger
        # Unknown until the first fetch, so that one is never held: a worker
        # started during a spike may have hours of backlog.
        self._behind_since = 0.0
        if yields is not None:  # the series exist, at 0, before the first hold
            metrics.YIELDING.labels(consumer.name).set(0)
            metrics.YIELD_SECONDS.labels(consumer.name)
        self._outcomes = {
            o: metrics.MESSAGES.labels(consumer.name, o) for o in ("ack", "nak", "dlq", "held")
        }

    async def _adopt(self, stop: asyncio.Event) -> bool:
        """Take ``max_deliver`` and ``ack_wait`` from the consumer as ``linkflow
        migrate`` configured it: the server stops redelivering at its own
        ``max_deliver``, so a worker counting to another number would never
        dead-letter the last delivery. The server's config is the one source;
        a different environment here is said once and applies at the next
        migrate. False if stopped before the consumer could be read, or if
        the consumer is one this worker cannot work on."""
        while not stop.is_set():
            try:
                info = await self._js.consumer_info(self._consumer.stream, self._consumer.name)
                break
            except Exception as exc:  # not provisioned yet, NATS restarting
                log.warning("%s: cannot read the consumer yet: %s", self._consumer.name, exc)
                await wait_or_stop(stop, 1.0)
        else:
            return False
        config = info.config
        adopted = msgspec.structs.replace(
            self._settings,
            max_attempts=config.max_deliver or self._settings.max_attempts,
            ack_wait=config.ack_wait or self._settings.ack_wait,
        )
        if adopted != self._settings:
            log.warning(
                "%s: using the consumer's max_deliver=%s and ack_wait=%ss (from linkflow "
                "migrate), not this environment's %s and %ss; run migrate to change them",
                self._consumer.name,
                adopted.max_attempts,
                adopted.ack_wait,
                self._settings.max_attempts,
                self._settings.ack_wait,
            )
        refused = topology.mismatch(self._consumer, config)
        if refused:
            # Said once; /readyz says it too (shared.http.checks.consumer).
            log.error("%s: refusing to consume: %s", self._consumer.name, refused)
            return False
        self._settings = adopted
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and handle batches until ``stop`` is set; the batch in hand is
        always finished (acked, naked or dead-lettered) before returning."""
        if not await self._adopt(stop):
            return
        puller = Puller(self._nc, self._consumer.stream, self._consumer.name)
        await puller.start()
        limit = self._settings.bulk_limit
        # The next batch is fetched while this one is handled, so the server
        # delivers it while the database writes (one loop, two stages).
        ahead: asyncio.Task[list[Msg]] | None = None
        yields = self._yields
        linger = self._linger
        next_fetch = fetched = 0.0  # monotonic
        try:
            while not stop.is_set():
                if ahead is None:
                    # The linger first: a gateway busy by its end still holds us.
                    wait = next_fetch - time.monotonic()
                    if wait > 0 and await wait_or_stop(stop, wait):
                        break
                    if yields is not None:
                        await yields.turn(self._behind_since, stop, self._consumer.name)
                    if stop.is_set():
                        break
                    fetched = time.monotonic()
                try:
                    msgs = await (ahead or puller.fetch(limit, wait=1.0))
                except ConnectionClosedError:
                    return
                except Exception as exc:  # reconnecting, server restarting
                    log.warning("%s: fetch failed: %s", self._consumer.name, exc)
                    await wait_or_stop(stop, 0.5)
                    continue
                finally:
                    ahead = None
                self._note_position(msgs)
                if not msgs:
                    continue
                # Nothing fetched ahead while this loop should hold off (a
                # batch in hand skips the turn, so with a backlog it would
                # never be taken) or linger: after a short batch with nothing
                # left behind it (a short one can come with more pending, at
                # the consumer's max ack pending).
                if linger > 0 and len(msgs) < limit and msgs[-1].metadata.num_pending == 0:
                    next_fetch = fetched + linger
                elif yields is None or not yields.holds(self._behind_since):
                    ahead = asyncio.create_task(puller.fetch(limit, wait=1.0))
                    fetched = time.monotonic()
                try:
                    await self.process(msgs, stop)
                except Exception:
                    # A bug must not kill the loop: what was not settled is
                    # redelivered after the ack wait.
                    log.exception("%s: batch failed unexpectedly", self._consumer.name)
                    await wait_or_stop(stop, 1.0)
        finally:
            # Delivered to us but never handled: give them back at once.
            unhandled: list[Msg] = []
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    unhandled += await ahead
            unhandled += await puller.stop()
            for msg in unhandled:
                with contextlib.suppress(Exception):
                    await msg.nak()

    def _note_position(self, msgs: list[Msg]) -> None:
        """After a fetch: with nothing left in the stream, every click up to
        now is in hand; otherwise the next one is newer than the last fetched."""
        now = time.time()
        if not msgs or msgs[-1].metadata.num_pending == 0:
            self._behind_since = now
        else:
            # The server's clock, not this one: a skew must not stretch the bound.
            self._behind_since = min(msgs[-1].metadata.timestamp.timestamp(), now)

    async def process(self, msgs: list[Msg], stop: asyncio.Event) -> None:
        started = time.perf_counter()
        name = self._consumer.name
        metrics.BATCH_SIZE.labels(name).observe(len(msgs))
        batch: list[Delivery[T]] = []
        decode = self._decode
        for msg in msgs:
            try:
                batch.append(Delivery(msg, decode(msg)))
            except INVALID as exc:
                await self._dead_letter(msg, PermanentError.from_decode(exc))
            except PermanentError as exc:
                await self._dead_letter(msg, exc)
        if batch:
            failures = await self._handle_holding(batch, stop)
            if failures is None:  # stopping while the dependency is down
                for d in batch:
                    await d.msg.nak()
                self._outcomes["nak"].inc(len(batch))
            else:
                await self._settle(batch, failures)
        metrics.BATCH_SECONDS.labels(name).observe(time.perf_counter() - started)

    async def _handle_holding(
        self, batch: list[Delivery[T]], stop: asyncio.Event
    ) -> Mapping[int, Exception] | None:
        attempt = 0
        heartbeat = asyncio.create_task(
            _keep_in_progress(self._nc, batch, self._settings.ack_wait / 3)
        )
        gauge = metrics.DEPENDENCY_DOWN.labels(self._consumer.name)
        try:
            while True:
                try:
                    result = await self._handler(batch)
                    gauge.set(0)
                    return result
                except Unavailable as exc:
                    attempt += 1
                    gauge.set(1)
                    self._outcomes["held"].inc(len(batch))
                    delay = self._settings.retry_delay(attempt)
                    log.warning(
                        "%s: %s; holding %d messages, retry in %.1fs",
                        self._consumer.name,
                        exc,
                        len(batch),
                        delay,
                    )
                    if await wait_or_stop(stop, delay):
                        return None
                except Exception as exc:  # the whole batch failed
                    return dict.fromkeys(range(len(batch)), exc)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _settle(self, batch: list[Delivery[T]], failures: Mapping[int, Exception]) -> None:
        if log.isEnabledFor(logging.DEBUG):
            for i, d in enumerate(batch):
                log.debug(
                    "%s: %s seq %d",
                    self._consumer.name,
                    "failed" if i in failures else "handled",
                    d.msg.metadata.sequence.stream,
                    extra={"request_id": request_id(d.msg)},
                )
        if not failures:
            await ack_all(self._nc, [d.msg for d in batch])
            self._outcomes["ack"].inc(len(batch))
            if self._first_failed:
                for d in batch:
                    self._first_failed.pop(d.msg.metadata.sequence.stream, None)
            return
        acked: list[Msg] = []
        for i, delivery in enumerate(batch):
            exc = failures.get(i)
            msg = delivery.msg
            if exc is None:
                acked.append(msg)
                self._first_failed.pop(msg.metadata.sequence.stream, None)
                continue
            attempts = msg.metadata.num_delivered
            age = time.time() - msg.metadata.timestamp.timestamp()
            if isinstance(exc, PermanentError) or attempts >= self._settings.max_attempts:
                await self._dead_letter(msg, exc)
            elif age > self._settings.max_ttl:
                too_old = f"not retried: older than MAX_TTL {self._settings.max_ttl:.0f}s"
                await self._dead_letter(msg, TransientError(f"{exc} ({too_old})"))
            else:
                self._first_failed.setdefault(msg.metadata.sequence.stream, time.time())
                await msg.nak(delay=self._settings.retry_delay(attempts))
                self._outcomes["nak"].inc()
                log.info(
                    "%s: nak seq %d (attempt %d): %s",
                    self._consumer.name,
                    msg.metadata.sequence.stream,
                    attempts,
                    exc,
                    extra={"request_id": request_id(msg)},
                )
        await ack_all(self._nc, acked)
        self._outcomes["ack"].inc(len(acked))

    async def _dead_letter(self, msg: Msg, exc: Exception) -> None:
        seq = msg.metadata.sequence.stream
        first = self._first_failed.pop(seq, None)
        await dead_letter(self._js, msg, self._consumer, exc, first_failed_at=first)
        self._outcomes["dlq"].inc()


async def _keep_in_progress(nc: Client, batch: Sequence[Delivery[T]], every: float) -> None:
    """Tell JetStream the batch is still being worked on, so a slow handler
    (slow database) is not redelivered to another worker meanwhile; each
    signal restarts the message's ack wait."""
    msgs = [d.msg for d in batch]
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await in_progress_all(nc, msgs)
