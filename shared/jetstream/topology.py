"""The one place that owns JetStream's configuration: streams, durable
consumers and the KV bucket. ``linkflow migrate`` provisions it; services only
bind to what exists, because nats-py's ``pull_subscribe`` silently keeps an old
consumer's config when asked to create one that is already there.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from shared import roster
from shared.settings import WorkerSettings

log = logging.getLogger(__name__)

LINKS: Final = "LINKS"
CLICKS: Final = "CLICKS"
DLQ: Final = "DLQ"
KV_LINKS: Final = "links"
# API keys (shared.http.keys) and when each was last used.
KV_KEYS: Final = "api_keys"
KV_USAGE: Final = "api_key_usage"
# The day's visitor salt, one key per UTC day (SPEC: a click's visitor),
# each key expiring at the end of its day.
KV_SALTS: Final = "visitor_salts"
# Human clicks counted per link with a visit limit (SPEC: max_visits).
KV_VISITS: Final = "link_visits"
# Short domains other than the default, by host (services.link.domains):
# written and read by gateways only.
KV_DOMAINS: Final = "domains"
BUCKETS: Final = (KV_LINKS, KV_KEYS, KV_USAGE, KV_SALTS, KV_VISITS, KV_DOMAINS)

DAY: Final = 86400.0
# The server's Nats-Msg-Id window: a publish retried within it is stored once.
DUPLICATE_WINDOW: Final = 120.0


@dataclass(frozen=True)
class Consumer:
    stream: str
    name: str
    filter_subject: str
    service: str  # settings prefix, e.g. "click_recorder"


def _consumer(stream: str, filter_subject: str, service: roster.Service) -> Consumer:
    return Consumer(stream, service.label, filter_subject, service.name)


CLICK_RECORDER: Final = _consumer(CLICKS, "clicks.>", roster.CLICK_RECORDER)
ANALYTICS_CLICKS: Final = _consumer(CLICKS, "clicks.>", roster.ANALYTICS)
CACHE_REFRESHER: Final = _consumer(LINKS, "links.>", roster.CACHE_REFRESHER)
CONSUMERS: Final = (CLICK_RECORDER, ANALYTICS_CLICKS, CACHE_REFRESHER)
# The webhooks service's own consumers, which it creates itself (the clicks
# one only while an endpoint wants link.clicked, so that webhooks cost the
# click path nothing until used): here for its NATS permissions.
WEBHOOKS_LINKS: Final = Consumer(LINKS, "webhooks-links", "links.>", roster.WEBHOOKS.name)
WEBHOOKS_CLICKS: Final = Consumer(CLICKS, "webhooks-clicks", "clicks.>", roster.WEBHOOKS.name)

# The server's advisories for messages that reached a consumer's max_deliver
# (the worker crashed or timed out on the last delivery, so it never
# dead-lettered them). A stream keeps them, so none is lost while the
# worker is down; each worker service drains its own consumers' advisories.
ADVISORIES: Final = "ADVISORIES"
MAX_DELIVERIES: Final = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"


def rescuer(consumer: Consumer) -> Consumer:
    """The consumer of ``consumer``'s max-deliveries advisories."""
    return Consumer(
        ADVISORIES,
        f"{consumer.name}-max-deliveries",
        f"{MAX_DELIVERIES}.{consumer.stream}.{consumer.name}",
        consumer.service,
    )


def streams(clicks_max_age: float, replicas: int = 1) -> list[StreamConfig]:
    configs = [
        StreamConfig(
            name=LINKS,
            # links.created too: the gateway publishes it without waiting for
            # a PubAck (fire-and-forget), and the stream keeps what arrives,
            # so a durable consumer (webhooks' link.created) misses none
            # published while it was down.
            subjects=["links.created", "links.updated", "links.deleted"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=30 * DAY,
            duplicate_window=DUPLICATE_WINDOW,
        ),
        # Limits retention (not work-queue) so that clicks can be replayed by
        # backfills and read by several independent consumers.
        StreamConfig(
            name=CLICKS,
            subjects=["clicks.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=clicks_max_age,
            discard=DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW,
        ),
        StreamConfig(
            name=DLQ,
            subjects=["dlq.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW,
        ),
        StreamConfig(
            name=ADVISORIES,
            subjects=[f"{MAX_DELIVERIES}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * DAY,
        ),
    ]
    for config in configs:
        config.num_replicas = replicas
    return configs


def consumer_config(consumer: Consumer, worker: WorkerSettings) -> ConsumerConfig:
    return ConsumerConfig(
        name=consumer.name,
        durable_name=consumer.name,
        filter_subject=consumer.filter_subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=worker.ack_wait,
        # The worker loop dead-letters on the last attempt itself; the server
        # stops redelivering after that many, so a crash loop cannot spin forever.
        max_deliver=max(worker.max_attempts, 1),
        max_ack_pending=max(worker.bulk_limit * max(worker.workers, 1) * 4, 1000),
        max_waiting=512,
    )


def mismatch(consumer: Consumer, config: ConsumerConfig) -> str | None:
    """Why a worker cannot work on the consumer the server holds (None if it
    can). Its delivery limits are adopted instead (the worker loop); what
    it filters and how it acks cannot be: the worker would handle other
    messages, or its acks would mean nothing."""
    if config.filter_subject != consumer.filter_subject:
        return (
            f"consumer {consumer.name} filters {config.filter_subject!r}, linkflow expects "
            f"{consumer.filter_subject!r}: run linkflow migrate"
        )
    if config.ack_policy != AckPolicy.EXPLICIT:
        return (
            f"consumer {consumer.name} acks {config.ack_policy}, linkflow expects explicit "
            "acks: run linkflow migrate"
        )
    return None


async def provision(
    js: JetStreamContext,
    clicks_max_age: float,
    workers: dict[str, WorkerSettings],
    replicas: int = 1,
) -> None:
    """Create or update every stream, consumer and KV bucket; idempotent.
    Replicas change in place (nats-server 2.10+ scales a stream up or down)."""
    for config in streams(clicks_max_age, replicas):
        try:
            await js.stream_info(config.name)  # type: ignore[arg-type]
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream %s", config.name)
        else:
            await js.update_stream(config)
    for consumer in CONSUMERS:
        # No "action" in the request: the server creates or updates in place.
        await js.add_consumer(consumer.stream, consumer_config(consumer, workers[consumer.service]))
        await js.add_consumer(
            ADVISORIES, consumer_config(rescuer(consumer), workers[consumer.service])
        )
    for bucket in BUCKETS:
        try:
            info = await js.stream_info(f"KV_{bucket}")
        except NotFoundError:
            await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    storage=StorageType.FILE,
                    replicas=replicas,
                    # A salt key carries its own TTL (the end of its day);
                    # this bounds the bucket even if one were written without.
                    ttl=2 * DAY if bucket == KV_SALTS else None,
                )
            )
            log.info("created KV bucket %s", bucket)
            info = await js.stream_info(f"KV_{bucket}")
        wanted = bucket_config(info.config, replicas)
        if wanted != info.config:
            # A bucket is a stream underneath: its replicas and rollups change
            # in place, so an existing deployment gets them on its next migrate.
            await js.update_stream(wanted)


def bucket_config(config: StreamConfig, replicas: int) -> StreamConfig:
    """A bucket's stream as linkflow keeps it. No rollups (nats-py creates
    buckets with them allowed): every writer of a bucket could otherwise wipe
    it whole with one ``Nats-Rollup: all`` message. linkflow never needs one:
    it writes tombstones and deletes keys, never ``kv.purge``s. Message
    deletes stay refused (nats-py's deny_delete); purging or deleting a
    stream is the admin identity's alone, by its NATS permissions (a
    deny_purge could never be taken back: the server refuses that update)."""
    return dataclasses.replace(config, num_replicas=replicas, allow_rollup_hdrs=False)
