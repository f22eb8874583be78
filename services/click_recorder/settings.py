"""The click-recorder's settings (``LINKFLOW_CLICK_RECORDER_*``)."""

from __future__ import annotations

import msgspec

from shared import roster
from shared.settings import Common, WorkerSettings


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    common: Common = msgspec.field(default_factory=Common)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    port: int = roster.CLICK_RECORDER.port
    host: str = "127.0.0.1"
