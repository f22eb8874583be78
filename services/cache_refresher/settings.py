"""The cache-refresher's settings (``LINKFLOW_CACHE_REFRESHER_*``)."""

from __future__ import annotations

import msgspec

from shared import roster
from shared.settings import Common, Duration, Listen, WorkerSettings


class Settings(Listen, kw_only=True, frozen=True):
    common: Common = msgspec.field(default_factory=Common)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    port: int = roster.CACHE_REFRESHER.port
    # How often PostgreSQL and KV are compared; also done once at start.
    reconcile_every: Duration = 300.0
