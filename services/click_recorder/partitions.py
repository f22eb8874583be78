"""Keeping ``clicks`` partitioned ahead of time and, with a retention, short.

The partitions themselves are made and dropped by the SQL functions the
migration creates (``services/click_recorder/migrations.py``); this module
decides when: today's and the next week's at start and every hour, a
click's own day at once if it has none (a click replayed from long ago),
and every day older than the retention dropped whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

import asyncpg

from shared.contracts import Click
from shared.jetstream.loops import Loop, periodic
from shared.jetstream.worker import Unavailable

log = logging.getLogger(__name__)

# Often enough that tomorrow's partition exists days before it is needed,
# and that a retention is applied within the hour.
EVERY: Final = 3600.0
# Seconds a partition's creation or drop waits for the table's lock (held
# by an export's read) before it gives up and tries later: the longest
# inserts may queue behind it.
LOCK_WAIT: Final = 1.0


def is_missing_partition(exc: Exception) -> bool:
    """PostgreSQL's answer to a row no partition takes (SQLSTATE 23514 is
    also a check constraint's, and ``clicks`` has none, but say it exactly)."""
    return isinstance(exc, asyncpg.CheckViolationError) and "no partition" in str(exc)


class Partitions:
    def __init__(self, pool: asyncpg.Pool, retention: float) -> None:
        self._pool = pool
        self._retention = timedelta(seconds=retention) if retention > 0 else None

    async def _ddl(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """A partition function's call, giving up after ``LOCK_WAIT``: making
        or dropping a partition locks ``clicks`` whole, and while it waits
        for an export's read to end (GET /api/clicks), every insert queues
        behind it."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {round(LOCK_WAIT * 1000)}")
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def maintain(self) -> None:
        try:
            await self._maintain()
        except asyncpg.LockNotAvailableError:
            # Days ahead of need: the next upkeep makes them.
            log.info("clicks: partition upkeep put off, the table is being read (an export)")

    async def _maintain(self) -> None:
        made = (
            await self._ddl("SELECT linkflow_click_partitions(now(), now() + interval '7 days')")
        )[0][0]
        if made:
            log.info("clicks: %d daily partition(s) created ahead", made)
        if self._retention is not None:
            dropped = await self._ddl(
                "SELECT linkflow_drop_click_partitions(now() - $1::interval) AS name",
                self._retention,
            )
            if dropped:
                log.info(
                    "clicks: dropped %s (every click older than the retention, %s)",
                    ", ".join(r["name"] for r in dropped),
                    self._retention,
                )

    async def cover(self, clicks: Sequence[Click]) -> None:
        """Partitions for every day the clicks fall in."""
        first = min(c.ts for c in clicks)
        last = max(c.ts for c in clicks)
        try:
            made = (await self._ddl("SELECT linkflow_click_partitions($1, $2)", first, last))[0][0]
        except asyncpg.LockNotAvailableError:
            # The batch is held and retried, no delivery attempt spent.
            raise Unavailable("a click's partition waits for an export to end") from None
        log.info(
            "clicks: %d partition(s) created for clicks from %s to %s",
            made,
            _day(first),
            _day(last),
        )

    def loop(self) -> Loop:
        return periodic("clicks partition upkeep", EVERY, self.maintain)


def _day(ts: datetime) -> str:
    return f"{ts:%Y-%m-%d}"
