"""The analytics service's settings (``LINKFLOW_ANALYTICS_*``)."""

from __future__ import annotations

import msgspec

from shared import roster
from shared.settings import Common, Duration, Listen, Rate, WorkerSettings


class Settings(Listen, kw_only=True, frozen=True):
    common: Common = msgspec.field(default_factory=Common)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    port: int = roster.ANALYTICS.port
    # How far behind the clicks this worker lets itself fall while a gateway
    # says redirects.busy (shared.jetstream.yielding), in seconds; 0 never
    # holds off.
    yield_lag: Duration = 60.0
    # Seconds between fetches once caught up (shared.jetstream.worker); 0: at once.
    linger: Duration = 0.25
    # API write calls per key (SPEC, "Access"): LINKFLOW_<SERVICE>_WRITE_RATE.
    write_rate: Rate = Rate(50.0)
    # How often the pipeline's gauges (consumer lag, DLQ depth, backfills)
    # are refreshed for /metrics, in seconds.
    pipeline_metrics_every: Duration = 5.0
    # How often visit counts missing from KV link_visits are put back, in seconds.
    visit_repair_every: Duration = 60.0
    # Connections of the API's own pool (stats, backfill calls): the click
    # consumer has its pool apart, so no API call can hold what it needs.
    api_connections: int = 5
    # Seconds any query an API call starts may run (PostgreSQL's
    # statement_timeout on the API pool), and at most wait for a connection.
    statement_timeout: Duration = 5.0
    # Live click streams (SSE) open at once in this process, and per key.
    streams: int = 100
    streams_per_key: int = 10

    def __post_init__(self) -> None:
        for name in ("api_connections", "streams", "streams_per_key"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.statement_timeout <= 0:
            raise ValueError("statement_timeout must be more than 0 seconds")
