"""Orphan visits (SPEC, ``visits.orphan``): requests the gateway answered
with no link, counted in memory and sent once a second.

Counting is a dict increment: a flood of random paths costs no I/O per
request, and at most :data:`PATHS` keys a second (a path cut to 256
characters each); past them a visit is summed under path ``*`` of its
domain and kind. Once a second the window is swapped for an empty one and
each key goes out as one core-NATS message: fire-and-forget, like the
SPEC says, so a second counted while NATS is away is lost, never retried.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final

from nats.aio.client import Client

from shared import metrics
from shared.contracts import (
    ORPHAN_OTHERS,
    ORPHAN_PATH_CUT,
    ORPHAN_VISITS,
    OrphanVisits,
    encode,
    now,
)
from shared.jetstream.loops import Loop, periodic

log = logging.getLogger(__name__)

# Distinct (domain, kind, path) keys a second. The ``*`` sums come on top:
# one per domain and kind that overflowed in that second.
PATHS: Final = 1000
EVERY: Final = 1.0

Key = tuple[str | None, str, str]


class Orphans:
    """Built with the gateway (counting needs nothing connected); the
    lifespan runs :meth:`loop` on its NATS connection."""

    def __init__(self, paths: int = PATHS) -> None:
        self._paths = paths
        self._counts: dict[Key, int] = {}
        self._since = now()

    def count(self, domain: str | None, kind: str, path: str) -> None:
        """One orphan visit: no I/O, no allocation past the window's bound."""
        counts = self._counts
        key = (domain, kind, path[:ORPHAN_PATH_CUT])
        if key not in counts and len(counts) >= self._paths:
            key = (domain, kind, ORPHAN_OTHERS)
        counts[key] = counts.get(key, 0) + 1

    def take(self) -> tuple[datetime, datetime, dict[Key, int]]:
        """The window so far, ``[from, to)``, and a new one started."""
        counts, self._counts = self._counts, {}
        since, self._since = self._since, now()
        return since, self._since, counts

    async def flush(self, nc: Client) -> None:
        since, until, counts = self.take()
        by_kind: dict[str, int] = {}
        for (_, kind, _), n in counts.items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        for kind, n in by_kind.items():
            metrics.ORPHAN_VISITS.labels(kind).inc(n)
        for (domain, kind, path), n in counts.items():
            visits = OrphanVisits(
                domain=domain, kind=kind, path=path, count=n, from_=since, to=until
            )
            # Buffered by the client, written by its flusher: no wait per message.
            await nc.publish(ORPHAN_VISITS, encode(visits))

    def loop(self, nc: Client) -> Loop:
        async def flush() -> None:
            await self.flush(nc)

        return periodic("orphan visits", EVERY, flush)
