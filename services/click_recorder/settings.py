"""The click-recorder's settings (``LINKFLOW_CLICK_RECORDER_*``)."""

from __future__ import annotations

import msgspec

from shared import roster
from shared.settings import Common, Duration, Listen, SettingsError, WorkerSettings


class Settings(Listen, kw_only=True, frozen=True):
    common: Common = msgspec.field(default_factory=Common)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    port: int = roster.CLICK_RECORDER.port
    # How far behind the clicks this worker lets itself fall while a gateway
    # says redirects.busy (shared.jetstream.yielding), in seconds; 0 never
    # holds off.
    yield_lag: Duration = 60.0
    # Seconds between fetches once caught up (shared.jetstream.worker); 0: at once.
    linger: Duration = 0.25
    # How long clicks stay in PostgreSQL (LINKFLOW_CLICK_RECORDER_RETENTION,
    # e.g. 400d); 0 keeps every click. Whole days go at once, once all of a
    # day (UTC) is older than this: a click stays up to a day longer.
    # Analytics' counts are in its own database and do not shrink.
    retention: Duration = 0.0
    # Exports of raw clicks (GET /api/clicks) running at once in this
    # process, each on a connection of their own pool (429 beyond).
    exports: int = 2
    # Seconds one fetch of an export's cursor may run (PostgreSQL's
    # statement_timeout), and its transaction may wait on a client that
    # stopped reading before the database ends it.
    export_timeout: Duration = 60.0

    def __post_init__(self) -> None:
        if self.exports < 1:
            raise SettingsError("exports must be at least 1")
        if self.export_timeout <= 0:
            raise SettingsError("export_timeout must be more than 0 seconds")
        # The partition function keeps the last day whoever asks (a stolen
        # identity cannot empty clicks): a shorter retention could never apply.
        if 0 < self.retention < 86400:
            raise SettingsError(f"retention: {self.retention:g} s is under a day (use 0 or 1d+)")
