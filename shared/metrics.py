"""Prometheus metrics shared by the services (one registry per process)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Metric,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

MESSAGES: Final = Counter(
    "linkflow_worker_messages_total",
    "Messages handled by a worker loop, by outcome (ack, nak, dlq, held)",
    ["consumer", "outcome"],
)
BATCH_SECONDS: Final = Histogram(
    "linkflow_worker_batch_seconds",
    "Time to handle one fetched batch",
    ["consumer"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE: Final = Histogram(
    "linkflow_worker_batch_size",
    "Messages per fetched batch",
    ["consumer"],
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000),
)
DEPENDENCY_DOWN: Final = Gauge(
    "linkflow_worker_dependency_down",
    "1 while a worker holds a batch because a dependency (database) is unavailable",
    ["consumer"],
)

YIELDING: Final = Gauge(
    "linkflow_worker_yielding",
    "1 while a worker holds off because a gateway said redirects.busy",
    ["consumer"],
)
YIELD_SECONDS: Final = Counter(
    "linkflow_worker_yield_seconds_total",
    "Time a worker held off for a busy gateway",
    ["consumer"],
)
GATEWAY_LOAD: Final = Gauge(
    "linkflow_gateway_load",
    "Share of one CPU the gateway's event loop ran or waited to run over the last quarter second",
)


class Tally:
    """A counter by one label for a hot path: a plain dict increment per event
    (prometheus_client's Counter takes a lock per ``inc``, which the redirect
    does not need: one event loop owns the tally), read at scrape time."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.counts: dict[int, int] = {}
        self._name = name
        self._documentation = documentation
        self._label = label
        REGISTRY.register(self)

    def add(self, value: int) -> None:
        counts = self.counts
        counts[value] = counts.get(value, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, n in sorted(self.counts.items()):
            family.add_metric([str(value)], n)
        yield family


class Latency:
    """A histogram for a hot path, in the same spirit as :class:`Tally`: one
    bisect and two additions per observation, no lock, exported at scrape
    time with Prometheus' cumulative buckets."""

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.total = 0.0
        self._name = name
        self._documentation = documentation
        REGISTRY.register(self)

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self._bounds, seconds)] += 1
        self.total += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation)
        buckets, running = [], 0
        for bound, n in zip((*map(repr, self._bounds), "+Inf"), self.counts, strict=True):
            running += n
            buckets.append((bound, running))
        family.add_metric([], buckets, self.total)
        yield family


REDIRECTS: Final = Tally("linkflow_redirects", "Redirects answered, by status", "status")
# From the request reaching the gateway's redirect to the response sent: the
# map lookup, the click's publish (or spool write) and the reply.
REDIRECT_SECONDS: Final = Latency(
    "linkflow_redirect_seconds",
    "Time to answer a redirect, click capture included",
    (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CLICK_GROUPS: Final = Counter(
    "linkflow_click_groups_total",
    "Groups of clicks the gateway sent to JetStream, one PubAck each (clicks in a group: "
    "those of one event-loop turn, at most 8)",
)
CLICK_PUBLISH_FAILURES: Final = Counter(
    "linkflow_click_publish_failures_total",
    "Clicks whose publish failed or timed out",
)
# Added once a second (services/link/orphans.py), not per request.
ORPHAN_VISITS: Final = Counter(
    "linkflow_orphan_visits_total",
    "Requests the gateway answered with no link, by kind (base_url, invalid_code, not_found)",
    ["kind"],
)
LINK_CACHE_SIZE: Final = Gauge(
    "linkflow_link_cache_entries",
    "Links held in the gateway's in-process map",
)
DOMAINS: Final = Gauge(
    "linkflow_domains",
    "Domain records (KV domains) held by the gateway",
)


def render() -> bytes:
    return generate_latest()


CACHE_REPAIRS: Final = Counter(
    "linkflow_cache_repairs_total",
    "KV entries repaired by reconciliation, by kind (missing, stale, corrupt, orphaned, upgraded)",
    ["kind"],
)
SPOOL_RECORDS: Final = Gauge(
    "linkflow_spool_records",
    "Clicks in the gateway's spool waiting to be replayed to NATS",
)
SPOOL_BYTES: Final = Gauge("linkflow_spool_bytes", "Bytes held by the gateway's spool")
SPOOL_REPLAYED: Final = Counter(
    "linkflow_spool_replayed_total",
    "Spooled clicks replayed to JetStream and acknowledged",
)
SPOOL_WRITTEN: Final = Counter(
    "linkflow_spool_written_total",
    "Clicks spooled to disk because NATS could not take them",
)
SPOOL_FULL: Final = Counter(
    "linkflow_spool_full_total",
    "Redirects answered 503 because the spool was full",
)
API_REFUSED: Final = Counter(
    "linkflow_api_refused_total",
    "API calls refused before their route ran, by status (401, 403, 429, 503)",
    ["status"],
)
CLICK_EXPORTS: Final = Gauge(
    "linkflow_click_exports_running",
    "Exports of raw clicks (GET /api/clicks) streaming now in this click-recorder",
)
CLICK_EXPORT_ROWS: Final = Counter(
    "linkflow_click_export_rows_total",
    "Clicks sent by the raw clicks' export (GET /api/clicks)",
)
LINK_LOOKUPS: Final = Counter(
    "linkflow_link_lookups_total",
    "Redirects that missed the in-process map, by where the code was found: arrived by "
    "the watch while awaited (watch) or not (unknown), with no I/O; or, while the map is "
    "not loaded, looked up in kv, database or nowhere (codes that cannot exist, or missed "
    "a second ago, are not looked up)",
    ["found"],
)

# The pipeline as the analytics service sees it (shared.jetstream and the
# backfills table), refreshed every few seconds, so an operator without the
# NATS exporter can alert on lag and dead letters.
CONSUMER_PENDING: Final = Gauge(
    "linkflow_consumer_pending",
    "Messages not yet delivered to a durable consumer",
    ["stream", "consumer"],
)
CONSUMER_ACK_PENDING: Final = Gauge(
    "linkflow_consumer_ack_pending",
    "Messages delivered to a durable consumer and not yet acknowledged",
    ["stream", "consumer"],
)
CONSUMER_LAG: Final = Gauge(
    "linkflow_consumer_lag_seconds",
    "Age of the oldest message a durable consumer has not acknowledged (0 when caught up)",
    ["stream", "consumer"],
)
DLQ_DEPTH: Final = Gauge(
    "linkflow_dlq_depth", "Dead letters waiting in the DLQ, by consumer", ["consumer"]
)
BACKFILLS_ACTIVE: Final = Gauge("linkflow_backfills_active", "Backfills pending or running")
BACKFILL_REMAINING: Final = Gauge(
    "linkflow_backfill_remaining", "Clicks the active backfills have yet to replay"
)
