"""The gateway's settings, built once in ``__main__``."""

from __future__ import annotations

from pathlib import Path

import msgspec

from shared import roster
from shared.settings import Common, Duration, Listen, Rate, Ratio, SettingsError


class Settings(Listen, kw_only=True, frozen=True):
    common: Common = msgspec.field(default_factory=Common)
    port: int = roster.LINK.port
    # API write calls per key (SPEC, "Access"): LINKFLOW_<SERVICE>_WRITE_RATE.
    write_rate: Rate = Rate(50.0)
    anonymize_ip: bool = True
    # How long a redirect waits for its click's PubAck before the click goes
    # to the spool (and the visitor gets the redirect from there).
    click_publish_timeout: Duration = 2.0
    # Where clicks wait while NATS is unreachable ("" = .linkflow/spool/link-<port>),
    # and how much of the disk they may take before redirects get 503.
    spool_dir: str = ""
    spool_max_bytes: int = 256 * 1024 * 1024
    # At this load (the share of one CPU the event loop ran or waited to run,
    # services.link.load) the gateway says redirects.busy and the workers
    # hold off; 0 never says it. A gateway saturated by a spike reads about
    # 1 once they do; at 0.7 a steady 11,000 redirects/s on two cores
    # already crossed it now and then, and the workers' pauses cut the rate
    # they keep up with from 0.27 to 0.15 of the bare app (0.22 at 0.85).
    busy_above: Ratio = 0.85
    # Seconds any query an API call starts may run (PostgreSQL's
    # statement_timeout on the gateway's pool): a key's search over every
    # link, or an import's insert, stops there (503), never holding the
    # connections the other calls need.
    statement_timeout: Duration = 15.0

    def __post_init__(self) -> None:
        if self.statement_timeout <= 0:
            raise SettingsError("statement_timeout must be more than 0 seconds")

    def spool_path(self) -> Path:
        return Path(self.spool_dir or f".linkflow/spool/link-{self.port}")
