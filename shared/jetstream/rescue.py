"""Dead-lettering the messages a worker never could: those that reached the
consumer's ``max_deliver`` because the worker crashed or timed out on their
last delivery. The server announces each with a MAX_DELIVERIES advisory,
kept in the ``ADVISORIES`` stream; this handler moves the message to the DLQ
with the SPEC's headers. The DLQ's per-consumer, per-sequence Nats-Msg-Id
makes it land once even if the worker had dead-lettered it too."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import msgspec
from nats.aio.client import Client
from nats.js.errors import APIError, NotFoundError

from shared.jetstream import dlq, topology
from shared.jetstream.worker import Delivery, Worker, json_payload
from shared.settings import WorkerSettings

log = logging.getLogger(__name__)

# JetStream's error code for a sequence no longer in the stream.
_NO_MESSAGE = 10037


class MaxDeliveries(msgspec.Struct, frozen=True):
    """``io.nats.jetstream.advisory.v1.max_deliver`` (the fields we use)."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


class Abandoned(Exception):
    """The server gave up redelivering: the worker never settled the message."""


class Rescuer:
    def __init__(self, nc: Client, consumer: topology.Consumer) -> None:
        self._js = nc.jetstream()
        self._consumer = consumer

    async def handle(self, batch: Sequence[Delivery[MaxDeliveries]]) -> Mapping[int, Exception]:
        for delivery in batch:
            advisory = delivery.payload
            try:
                raw = await self._js.get_msg(advisory.stream, advisory.stream_seq)
            except APIError as exc:
                if isinstance(exc, NotFoundError) or exc.err_code == _NO_MESSAGE:
                    log.warning(
                        "%s: seq %d reached max deliveries but is no longer in %s",
                        self._consumer.name,
                        advisory.stream_seq,
                        advisory.stream,
                    )
                    continue
                raise
            failed = dlq.Failed(
                raw.subject or "",
                raw.data or b"",
                dict(raw.headers or {}),
                advisory.stream_seq,
                advisory.deliveries,
            )
            reason = Abandoned(
                f"delivered {advisory.deliveries} times and never acknowledged "
                "(worker crashed or timed out on the last delivery)"
            )
            await dlq.publish(self._js, failed, self._consumer, reason)
            log.warning(
                "%s: dead-lettered abandoned seq %d", self._consumer.name, advisory.stream_seq
            )
        return {}


def rescue_worker(
    nc: Client, consumer: topology.Consumer, settings: WorkerSettings
) -> Worker[MaxDeliveries]:
    return Worker(
        nc,
        topology.rescuer(consumer),
        settings,
        json_payload(MaxDeliveries),
        Rescuer(nc, consumer).handle,
    )
