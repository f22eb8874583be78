"""Orphan visits (``visits.orphan``): the gateways' per-second sums, summed
again here per hour and written once a second, one statement a flush.

Core NATS, fire-and-forget by design (SPEC): a message published while
analytics is down, or a flush the database refused twice over, is lost,
and the counts are short by it. One replica of analytics takes each
message (a queue group), so replicas never count one twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final

import asyncpg
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared import roster
from shared.contracts import INVALID, ORPHAN_VISITS, OrphanVisits
from shared.jetstream.loops import Loop, periodic

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder(OrphanVisits).decode
_encode = msgspec.json.Encoder().encode

EVERY: Final = 1.0
# Keys held between flushes (each gateway sends about 1,000 a second at
# most); past this, while the database is away, new keys are dropped.
HELD: Final = 100_000

# ORDER BY: replicas' flushes take row locks in one order (no deadlocks).
UPSERT: Final = """
INSERT INTO orphan_visits AS o (hour, domain, kind, path, count)
SELECT hour, domain, kind, path, count
FROM json_to_recordset($1::json)
     AS t(hour timestamptz, domain text, kind text, path text, count bigint)
ORDER BY hour, domain, kind, path
ON CONFLICT (hour, domain, kind, path) DO UPDATE SET count = o.count + EXCLUDED.count
"""

Key = tuple[datetime, str, str, str]


class _Row(msgspec.Struct, frozen=True):
    hour: datetime
    domain: str
    kind: str
    path: str
    count: int


class OrphanCounts:
    def __init__(self, pool: asyncpg.Pool, held: int = HELD) -> None:
        self._pool = pool
        self._held = held
        self._pending: dict[Key, int] = {}
        self._dropped = 0

    async def subscribe(self, nc: Client) -> Subscription:
        return await nc.subscribe(ORPHAN_VISITS, queue=roster.ANALYTICS.label, cb=self.on_message)

    async def on_message(self, msg: Msg) -> None:
        try:
            visits = _decode(msg.data)
        except INVALID as exc:
            log.warning("ignoring a malformed %s message: %s", ORPHAN_VISITS, exc)
            return
        hour = visits.from_.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        # PostgreSQL's text holds no U+0000 (a request for /%00 has one).
        path = visits.path.replace("\x00", "\ufffd")
        self._add((hour, visits.domain or "", visits.kind, path), visits.count)

    def _add(self, key: Key, count: int) -> None:
        pending = self._pending
        if key in pending:
            pending[key] += count
        elif len(pending) < self._held:
            pending[key] = count
        else:
            self._dropped += count

    async def flush(self) -> None:
        taken, self._pending = self._pending, {}
        if self._dropped:
            log.warning("%d orphan visits dropped: too many held while unwritten", self._dropped)
            self._dropped = 0
        if not taken:
            return
        rows = [_Row(h, d, k, p, n) for (h, d, k, p), n in taken.items()]
        try:
            await self._pool.execute(UPSERT, _encode(rows).decode())
        except Exception:
            # Kept for the next flush (bounded by HELD), then the loop logs it.
            for key, n in taken.items():
                self._add(key, n)
            raise

    async def close(self) -> None:
        """The last flush, on the way out: a failure is logged, not raised."""
        try:
            await self.flush()
        except Exception as exc:
            log.warning("orphan visits not stored on exit: %r", exc)

    def loop(self) -> Loop:
        return periodic("storing orphan visits", EVERY, self.flush)
