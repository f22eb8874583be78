"""The analytics service's settings (``LINKFLOW_ANALYTICS_*``)."""

from __future__ import annotations

import msgspec

from shared import roster
from shared.settings import Common, WorkerSettings, parse_rate


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    common: Common = msgspec.field(default_factory=Common)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    port: int = roster.ANALYTICS.port
    host: str = "127.0.0.1"
    # How far behind the clicks this worker lets itself fall while a gateway
    # says redirects.busy (shared.jetstream.yielding), in seconds; 0 never
    # holds off.
    yield_lag: float = 60.0
    # Seconds between fetches once caught up (shared.jetstream.worker); 0: at once.
    linger: float = 0.25
    # API write calls per key (SPEC, "Access"): LINKFLOW_<SERVICE>_WRITE_RATE.
    write_rate: str = "50/s"
    # How often the pipeline's gauges (consumer lag, DLQ depth, backfills)
    # are refreshed for /metrics, in seconds.
    pipeline_metrics_every: float = 5.0
    # How often visit counts missing from KV link_visits are put back, in seconds.
    visit_repair_every: float = 60.0

    def __post_init__(self) -> None:
        parse_rate(self.write_rate)  # refused at start, not at the first write
