"""Writes of the analytics database (the click consumer's, backfills'); the
stats API reads through services/analytics/stats.py on a pool of its own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Final

import asyncpg
import msgspec

from services.analytics import dimensions
from shared.contracts import Click, VisitCount, link_key, millis
from shared.geo import Countries
from shared.useragent import agent

# One statement per batch, its rows one JSON array (cheaper to encode than
# one array per column): the ledger insert decides which clicks are new,
# and only those are added to the hourly counts, in the same transaction.
# Links with a visit limit: code -> the created_at their count belongs to.
Limited = Mapping[str, datetime]

# DISTINCT ON drops a click that appears twice in one batch; ORDER BY makes
# concurrent workers take row locks in the same order (no deadlocks).
RECORD: Final = """
WITH input AS (
    SELECT DISTINCT ON (id) *
    FROM json_to_recordset($1::json)
         AS t(id text, code text, ts timestamptz, referrer text, country text, device text,
              browser text, os text, is_bot boolean, visitor text, destination smallint)
), fresh AS (
    INSERT INTO counted_clicks (id, code, ts)
    SELECT id, code, ts FROM input
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), counted AS (
    SELECT i.*, date_trunc('hour', i.ts, 'UTC') AS hour FROM input i JOIN fresh USING (id)
), seen AS (
    INSERT INTO click_visitors (code, hour, is_bot, visitor)
    SELECT DISTINCT code, hour, is_bot, visitor FROM counted WHERE visitor IS NOT NULL
    ORDER BY code, hour, is_bot, visitor
    ON CONFLICT DO NOTHING
), split AS (
    INSERT INTO destination_visitors (code, hour, destination, is_bot, visitor)
    SELECT DISTINCT code, hour, destination, is_bot, visitor FROM counted
    WHERE visitor IS NOT NULL AND destination IS NOT NULL
    ORDER BY code, hour, destination, is_bot, visitor
    ON CONFLICT DO NOTHING
), limits AS (
    SELECT * FROM json_to_recordset($2::json) AS l(code text, since timestamptz)
), visits AS (
    INSERT INTO link_visits AS v (code, since, visits)
    SELECT code, since, count(*) FROM counted JOIN limits USING (code)
    -- A click of an earlier link with this code (still in the backlog when
    -- the code was taken again) is not this link's; a second's slack for
    -- the gateway's clock against PostgreSQL's.
    WHERE NOT is_bot AND ts >= since - interval '1 second'
    GROUP BY code, since ORDER BY code
    ON CONFLICT (code) DO UPDATE SET
        visits = CASE WHEN v.since = EXCLUDED.since THEN v.visits + EXCLUDED.visits
                      WHEN v.since < EXCLUDED.since THEN EXCLUDED.visits
                      ELSE v.visits END,
        since = greatest(v.since, EXCLUDED.since)
), dims AS (
    SELECT code, hour, 'total' AS dim, '' AS value, is_bot FROM counted
    UNION ALL SELECT code, hour, 'referrer', referrer, is_bot FROM counted
    UNION ALL SELECT code, hour, 'country', country, is_bot FROM counted
    UNION ALL SELECT code, hour, 'device', device, is_bot FROM counted
    UNION ALL SELECT code, hour, 'browser', browser, is_bot FROM counted
    UNION ALL SELECT code, hour, 'os', os, is_bot FROM counted
    UNION ALL SELECT code, hour, 'destination', destination::text, is_bot FROM counted
        WHERE destination IS NOT NULL
)
INSERT INTO click_stats (code, hour, dim, value, is_bot, count)
SELECT code, hour, dim, value, is_bot, count(*) FROM dims
GROUP BY code, hour, dim, value, is_bot
ORDER BY code, hour, dim, value, is_bot
ON CONFLICT (code, hour, dim, value, is_bot)
DO UPDATE SET count = click_stats.count + EXCLUDED.count
"""


class _Row(msgspec.Struct, frozen=True, gc=False):
    """A click as RECORD reads it: its dimensions already derived."""

    id: str
    code: str
    ts: datetime
    referrer: str
    country: str
    device: str
    browser: str
    os: str
    is_bot: bool
    visitor: str | None
    destination: int | None


_encode = msgspec.json.Encoder().encode


class AnalyticsStore:
    def __init__(self, pool: asyncpg.Pool, countries: Countries) -> None:
        self.pool = pool
        self._countries = countries

    async def record(self, clicks: Sequence[Click], limited: Limited | None = None) -> None:
        """Count ``clicks``, each once; a human click of a link in
        ``limited`` (code -> its created_at) also counts against its visit
        limit. Backfills pass none: they recount the past, and visits were
        counted when the clicks first came."""
        rows = []
        for c in clicks:
            found = agent(c.user_agent)
            rows.append(
                _Row(
                    id=c.id,
                    # The link's key: its code, or host/code on another domain.
                    code=link_key(c.domain, c.code),
                    ts=c.ts,
                    referrer=dimensions.referrer_host(c.referrer),
                    # The CDN's header, else GeoIP on the address the click
                    # carries (anonymized: its network has the same country).
                    country=dimensions.country(c.country or self._countries.country(c.ip)),
                    device="bot" if c.is_bot else found.device,
                    browser=found.browser,
                    os=found.os,
                    is_bot=c.is_bot,
                    visitor=c.visitor,
                    destination=c.destination,
                )
            )
        limits = [{"code": c, "since": t} for c, t in (limited or {}).items()]
        await self.pool.execute(RECORD, _encode(rows).decode(), _encode(limits).decode())

    async def visits(self, codes: Sequence[str]) -> dict[str, VisitCount]:
        """The visit counts held for ``codes`` (those with any)."""
        rows = await self.pool.fetch(
            "SELECT code, since, visits FROM link_visits WHERE code = ANY($1::text[])", codes
        )
        return {r["code"]: VisitCount(since=millis(r["since"]), visits=r["visits"]) for r in rows}

    async def link_created(self, day: date) -> None:
        await self.pool.execute(
            "INSERT INTO links_created_daily (day, count) VALUES ($1, 1) "
            "ON CONFLICT (day) DO UPDATE SET count = links_created_daily.count + 1",
            day,
        )
