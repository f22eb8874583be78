"""``/api/pipeline``: how far behind each durable consumer is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.jetstream import dlq, topology


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


async def status(js: JetStreamContext) -> dict[str, Any]:
    depth = await dlq.depth_by_consumer(js)
    now = datetime.now(UTC)
    consumers: list[dict[str, Any]] = []
    for consumer in topology.CONSUMERS:
        try:
            info = await js.consumer_info(consumer.stream, consumer.name)
        except NotFoundError:
            consumers.append(
                {
                    "stream": consumer.stream,
                    "consumer": consumer.name,
                    "error": "consumer does not exist (run linkflow migrate)",
                }
            )
            continue
        backlog = (info.num_pending or 0) + (info.num_ack_pending or 0)
        oldest = None
        if backlog:
            oldest = await _oldest_unacked(js, consumer, info.ack_floor.stream_seq or 0)
        last_active = info.delivered.last_active
        consumers.append(
            {
                "stream": consumer.stream,
                "consumer": consumer.name,
                "pending": info.num_pending or 0,
                "ack_pending": info.num_ack_pending or 0,
                "redelivered": info.num_redelivered or 0,
                # Age of the oldest message not yet acknowledged: 0 when caught up.
                "lag_seconds": round((now - oldest).total_seconds(), 3) if oldest else 0.0,
                "last_active": last_active.isoformat() if last_active else None,
                "dlq_depth": depth.get(consumer.name, 0),
            }
        )
    return {"consumers": consumers, "dlq": depth}
