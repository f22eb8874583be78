"""The gateway's load, and ``redirects.busy`` while it is high.

Load is the share of one CPU the event loop's thread ran or waited to run
(``/proc/thread-self/schedstat``: time on the CPU plus time runnable in the
run queue) over each quarter second. Waiting counts: a gateway that wants
the CPU but does not get it is as busy as one that has it, and that wait is
what the work behind the redirect causes on a shared machine. Where the
kernel gives no schedstat, CPU time alone is the load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Final

import msgspec
from nats.aio.client import Client

from shared import metrics
from shared.contracts import REDIRECTS_BUSY, RedirectsBusy
from shared.jetstream.loops import wait_or_stop

log = logging.getLogger(__name__)

EVERY: Final = 0.25
# A worker holds off this long after the last signal: a few missed or late
# ones (a busy loop samples late) do not let it start and stop.
HOLD: Final = 4 * EVERY
_SCHEDSTAT: Final = Path("/proc/thread-self/schedstat")


def _wanted_ns() -> int:
    """Nanoseconds this thread ran or waited to run, since it started."""
    try:
        ran, waited, _ = _SCHEDSTAT.read_text().split()
        return int(ran) + int(waited)
    except (OSError, ValueError):
        return time.thread_time_ns()


class LoadReporter:
    """Samples the load from the event loop's own thread (the loop it runs
    on) and, at ``busy_above`` or more, publishes ``redirects.busy``; with
    ``busy_above`` 0 it only measures."""

    def __init__(self, nc: Client, gateway: str, busy_above: float) -> None:
        self._nc = nc
        self._gateway = gateway
        self._busy_above = busy_above
        self.load = 0.0

    async def loop(self, stop: asyncio.Event) -> None:
        wanted, at = _wanted_ns(), time.monotonic_ns()
        while not await wait_or_stop(stop, EVERY):
            now_wanted, now = _wanted_ns(), time.monotonic_ns()
            self.load = (now_wanted - wanted) / max(now - at, 1)
            wanted, at = now_wanted, now
            metrics.GATEWAY_LOAD.set(self.load)
            if self._busy_above and self.load >= self._busy_above:
                busy = RedirectsBusy(gateway=self._gateway, load=round(self.load, 3), hold=HOLD)
                try:
                    await self._nc.publish(REDIRECTS_BUSY, msgspec.json.encode(busy))
                except Exception as exc:  # NATS away: the workers are not fetching either
                    log.debug("redirects.busy not sent: %r", exc)
