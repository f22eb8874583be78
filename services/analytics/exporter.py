"""The pipeline on ``/metrics``: each durable consumer's pending messages and
lag, the DLQ's depth by consumer, and the backfills still to run, refreshed
every ``pipeline_metrics_every`` seconds from the same view as
``/api/pipeline``. With several analytics replicas each exports the same
values: alert on ``max``, not ``sum``."""

from __future__ import annotations

import logging

import asyncpg
from msgspec import UnsetType
from nats.js import JetStreamContext

from services.analytics import pipeline
from services.analytics.backfill import ACTIVE
from shared import metrics
from shared.jetstream import topology
from shared.jetstream.loops import Loop, periodic

log = logging.getLogger(__name__)


async def refresh(js: JetStreamContext, pool: asyncpg.Pool, history: pipeline.History) -> None:
    lags = await pipeline.status(js)
    history.add(lags)
    for c in lags.consumers:
        if (
            isinstance(c.pending, UnsetType)
            or isinstance(c.ack_pending, UnsetType)
            or isinstance(c.lag_seconds, UnsetType)
        ):
            continue  # the consumer does not exist
        labels = (c.stream, c.consumer)
        metrics.CONSUMER_PENDING.labels(*labels).set(c.pending)
        metrics.CONSUMER_ACK_PENDING.labels(*labels).set(c.ack_pending)
        metrics.CONSUMER_LAG.labels(*labels).set(c.lag_seconds)
    depth: dict[str, int] = {c.name: 0 for c in topology.CONSUMERS} | lags.dlq
    for consumer, n in depth.items():
        metrics.DLQ_DEPTH.labels(consumer).set(n)
    row = await pool.fetchrow(
        "SELECT count(*) AS active, coalesce(sum(total - processed), 0) AS remaining "
        "FROM backfills WHERE state = ANY($1::text[])",
        list(ACTIVE),
    )
    assert row is not None
    metrics.BACKFILLS_ACTIVE.set(row["active"])
    metrics.BACKFILL_REMAINING.set(row["remaining"])


def exporter(js: JetStreamContext, pool: asyncpg.Pool, history: pipeline.History) -> Loop:
    # NATS or the database down: the gauges keep their values until the next round.
    return periodic(
        "refreshing the pipeline metrics", history.every, lambda: refresh(js, pool, history)
    )
