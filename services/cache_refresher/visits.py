"""Counting human clicks of links with a visit limit (SPEC: ``max_visits``).

The gateway must not touch the database per redirect, so the count lives
behind the bus: this consumer of ``CLICKS`` counts, in PostgreSQL, each
human click of a link that has a limit, once (a ledger of click ids absorbs
redeliveries), and puts the link's count into the KV bucket ``link_visits``,
which every gateway watches. A gateway answers 410 once the count it holds
reaches the limit; until the count arrives it counts its own redirects
(services/link/limits.py), so the overshoot is what other gateways redirect
while a click travels through this loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

import asyncpg
import msgspec
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from shared.contracts import INVALID, VisitCount, encode, millis
from shared.db import UNAVAILABLE
from shared.jetstream.loops import Loop, periodic
from shared.jetstream.worker import Delivery, Unavailable

log = logging.getLogger(__name__)


class Seen(msgspec.Struct, frozen=True):
    """The fields of a ``clicks.<code>`` payload (shared.contracts.Click) that
    counting needs; the others are not decoded."""

    id: str
    code: str
    is_bot: bool


LIMITED: Final = """
SELECT code, created_at FROM links
WHERE code = ANY($1::text[]) AND max_visits IS NOT NULL AND deleted_at IS NULL
"""
# New ledger rows are counted into their link's generation; a count of an
# older generation (the code was deleted and taken again) starts over.
COUNT: Final = """
WITH new AS (
    INSERT INTO link_visits (id, code, since)
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
    ON CONFLICT (id) DO NOTHING
    RETURNING code, since
)
INSERT INTO link_visit_counts AS c (code, since, visits)
SELECT code, since, count(*) FROM new GROUP BY code, since
ON CONFLICT (code) DO UPDATE SET
    visits = CASE WHEN c.since = EXCLUDED.since THEN c.visits + EXCLUDED.visits
                  WHEN c.since < EXCLUDED.since THEN EXCLUDED.visits
                  ELSE c.visits END,
    since = greatest(c.since, EXCLUDED.since)
"""
COUNTS: Final = "SELECT code, since, visits FROM link_visit_counts WHERE code = ANY($1::text[])"
# Every live limited link's count, for the repair pass.
ALL_COUNTS: Final = """
SELECT c.code, c.since, c.visits FROM link_visit_counts c JOIN links l USING (code)
WHERE l.max_visits IS NOT NULL AND l.deleted_at IS NULL AND l.created_at = c.since
"""
_KV_UNAVAILABLE: Final = (ConnectionClosedError, NatsTimeoutError, NoRespondersError)
_decode_count = msgspec.json.Decoder(VisitCount).decode


class VisitCounter:
    def __init__(self, pool: asyncpg.Pool, kv: KeyValue) -> None:
        self._pool = pool
        self._kv = kv

    async def handle(self, batch: Sequence[Delivery[Seen]]) -> Mapping[int, Exception]:
        humans = [d.payload for d in batch if not d.payload.is_bot]
        if not humans:
            return {}
        try:
            counts = await self._count(humans)
        except UNAVAILABLE as exc:
            raise Unavailable(f"database unavailable: {exc!r}") from exc
        # Put after the commit and before the ack: a redelivered batch adds
        # nothing to the ledger but puts the counts again.
        try:
            for code, since, visits in counts:
                await self._kv.put(code, encode(VisitCount(since=millis(since), visits=visits)))
        except _KV_UNAVAILABLE as exc:
            raise Unavailable(f"KV unavailable: {exc!r}") from exc
        return {}

    async def _count(self, humans: Sequence[Seen]) -> list[tuple[str, datetime, int]]:
        codes = list({click.code for click in humans})
        async with self._pool.acquire() as conn, conn.transaction():
            limited: dict[str, datetime] = {
                r["code"]: r["created_at"] for r in await conn.fetch(LIMITED, codes)
            }
            if not limited:
                return []
            counted = [click for click in humans if click.code in limited]
            await conn.execute(
                COUNT,
                [click.id for click in counted],
                [click.code for click in counted],
                [limited[click.code] for click in counted],
            )
            rows = await conn.fetch(COUNTS, list(limited))
        return [(r["code"], r["since"], r["visits"]) for r in rows]


async def republish(pool: asyncpg.Pool, kv: KeyValue) -> int:
    """Put every live limited link's count whose KV entry is missing or
    behind: a bucket that lost entries (or was recreated) would otherwise
    leave an exhausted link open, since it gets no more clicks to count."""
    repaired = 0
    for r in await pool.fetch(ALL_COUNTS):
        want = VisitCount(since=millis(r["since"]), visits=r["visits"])
        held: VisitCount | None
        try:
            held = _decode_count((await kv.get(r["code"])).value or b"")
        except (KeyNotFoundError, *INVALID):
            held = None
        if held != want:
            await kv.put(r["code"], encode(want))
            repaired += 1
    return repaired


def republisher(pool: asyncpg.Pool, kv: KeyValue, every: float) -> Loop:
    async def once() -> None:
        repaired = await republish(pool, kv)
        if repaired:
            log.warning("visit counts: put %d missing or stale KV entries", repaired)

    return periodic("visit-counts", every, once)
