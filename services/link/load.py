"""The gateway's load, and ``redirects.busy`` while it is high.

Load is the share of one CPU the event loop's thread ran or waited to run
(``/proc/thread-self/schedstat``: time on the CPU plus time runnable in the
run queue) over each quarter second. Waiting counts: a gateway that wants
the CPU but does not get it is as busy as one that has it, and that wait is
what the work behind the redirect causes on a shared machine. Where the
kernel gives no schedstat, CPU time alone is the load.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

import msgspec
from nats.aio.client import Client

from shared import metrics
from shared.contracts import REDIRECTS_BUSY, RedirectsBusy
from shared.jetstream.loops import Loop, periodic

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
        self._last: tuple[int, int] | None = None  # (wanted ns, monotonic ns)
        self.load = 0.0

    def loop(self) -> Loop:
        return periodic("gateway load", EVERY, self.sample)

    async def sample(self) -> None:
        """The load since the last sample (the first only starts the count);
        a failed publish (NATS away, the workers are not fetching either) is
        logged once per streak by ``periodic``."""
        wanted, at = _wanted_ns(), time.monotonic_ns()
        last, self._last = self._last, (wanted, at)
        if last is None:
            return
        self.load = (wanted - last[0]) / max(at - last[1], 1)
        metrics.GATEWAY_LOAD.set(self.load)
        if self._busy_above and self.load >= self._busy_above:
            busy = RedirectsBusy(gateway=self._gateway, load=round(self.load, 3), hold=HOLD)
            await self._nc.publish(REDIRECTS_BUSY, msgspec.json.encode(busy))
