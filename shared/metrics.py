"""Prometheus metrics shared by the services (one registry per process)."""

from __future__ import annotations

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
from prometheus_client.core import CounterMetricFamily

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


REDIRECTS: Final = Tally("linkflow_redirects", "Redirects answered, by status", "status")
CLICK_PUBLISH_FAILURES: Final = Counter(
    "linkflow_click_publish_failures_total",
    "Clicks whose publish failed or timed out",
)
LINK_CACHE_SIZE: Final = Gauge(
    "linkflow_link_cache_entries",
    "Links held in the gateway's in-process map",
)


def render() -> bytes:
    return generate_latest()


CACHE_REPAIRS: Final = Counter(
    "linkflow_cache_repairs_total",
    "KV entries repaired by reconciliation, by kind (missing, stale, corrupt, orphaned)",
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
LINK_LOOKUPS: Final = Counter(
    "linkflow_link_lookups_total",
    "Redirects that missed the in-process map and looked the code up, by where it was "
    "found (kv, database, nowhere); codes that cannot exist or missed a second ago are not",
    ["found"],
)
