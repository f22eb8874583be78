"""``/api/pipeline``: how far behind each durable consumer is."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import NamedTuple

from msgspec import UnsetType
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.analytics.payloads import (
    BusyState,
    ConsumerSample,
    ConsumerStatus,
    PipelineHistory,
    PipelineSample,
    PipelineStatus,
)
from shared.jetstream import dlq, topology


class Lags(NamedTuple):
    """Each durable consumer's backlog, and the DLQ's depth by consumer."""

    consumers: list[ConsumerStatus]
    dlq: dict[str, int]

    def view(self, busy: BusyState) -> PipelineStatus:
        """``/api/pipeline``'s answer: these, and why a lag grows during a
        spike (the click workers hold off for the gateways)."""
        return PipelineStatus(consumers=self.consumers, dlq=self.dlq, redirects_busy=busy)


async def _oldest_unacked(
    js: JetStreamContext, consumer: topology.Consumer, ack_floor: int
) -> datetime | None:
    try:
        raw = await js.get_msg(
            consumer.stream, ack_floor + 1, subject=consumer.filter_subject, next=True
        )
    except NotFoundError:
        return None
    return raw.time


async def status(js: JetStreamContext) -> Lags:
    depth = await dlq.depth_by_consumer(js)
    now = datetime.now(UTC)
    consumers: list[ConsumerStatus] = []
    for consumer in topology.CONSUMERS:
        try:
            info = await js.consumer_info(consumer.stream, consumer.name)
        except NotFoundError:
            consumers.append(
                ConsumerStatus(
                    stream=consumer.stream,
                    consumer=consumer.name,
                    error="consumer does not exist (run linkflow migrate)",
                )
            )
            continue
        backlog = (info.num_pending or 0) + (info.num_ack_pending or 0)
        oldest = None
        if backlog:
            oldest = await _oldest_unacked(js, consumer, info.ack_floor.stream_seq or 0)
        last_active = info.delivered.last_active
        consumers.append(
            ConsumerStatus(
                stream=consumer.stream,
                consumer=consumer.name,
                pending=info.num_pending or 0,
                ack_pending=info.num_ack_pending or 0,
                redelivered=info.num_redelivered or 0,
                # Age of the oldest message not yet acknowledged: 0 when caught up.
                lag_seconds=round((now - oldest).total_seconds(), 3) if oldest else 0.0,
                last_active=last_active.isoformat() if last_active else None,
                dlq_depth=depth.get(consumer.name, 0),
            )
        )
    return Lags(consumers, depth)


class History:
    """The pipeline's last minutes, as the exporter samples it (the web
    app's chart of lag per consumer): each sample's time and, by consumer,
    its pending messages and lag. In memory, per replica; a restart starts
    it again (Prometheus keeps the long view)."""

    def __init__(self, minutes: float, every: float) -> None:
        self.every = every
        self._samples: deque[PipelineSample] = deque(maxlen=max(int(minutes * 60 / every), 2))

    def add(self, lags: Lags) -> None:
        consumers: dict[str, ConsumerSample] = {}
        for c in lags.consumers:
            if isinstance(c.pending, UnsetType) or isinstance(c.lag_seconds, UnsetType):
                continue  # the consumer does not exist
            consumers[c.consumer] = ConsumerSample(pending=c.pending, lag_seconds=c.lag_seconds)
        self._samples.append(PipelineSample(ts=datetime.now(UTC).isoformat(), consumers=consumers))

    def view(self) -> PipelineHistory:
        return PipelineHistory(every=self.every, items=list(self._samples))
