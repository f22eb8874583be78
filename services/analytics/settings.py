"""The analytics service's settings (``LINKFLOW_ANALYTICS_*``)."""

from __future__ import annotations

import msgspec

from shared.settings import Common, WorkerSettings


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    common: Common = msgspec.field(default_factory=Common)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    port: int = 8081
    host: str = "127.0.0.1"
