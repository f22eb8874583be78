"""The stats API's reads, on the API's own pool.

That pool is apart from the click consumer's (services/analytics/app.py),
and its connections carry a statement timeout: however many calls a key
makes and whatever they ask, they hold only these connections, each for
at most that long, and the consumer never waits for one of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any, Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.analytics.payloads import (
    BrowserCount,
    CountryCount,
    DayCount,
    DestinationCount,
    DeviceCount,
    LinksCreated,
    LinkStats,
    OrphanKinds,
    OrphanPath,
    OrphanStats,
    OsCount,
    OtherCounts,
    ReferrerCount,
    SeriesPoint,
    TopLink,
    TopLinks,
)
from shared.contracts import link_key, split_link_key
from shared.http.problems import Problem

# Each list of a stats answer: the dimension in click_stats -> its entries' type.
LISTS: Final[dict[str, type[Any]]] = {
    "referrer": ReferrerCount,
    "country": CountryCount,
    "device": DeviceCount,
    "browser": BrowserCount,
    "os": OsCount,
}

# Buckets cover [start, end) at hour granularity; empty ones count 0.
# Visitors are distinct per bucket: one seen in two of its hours is one.
SERIES: Final = """
SELECT b AS ts,
       (SELECT coalesce(sum(s.count), 0)::bigint FROM click_stats s
        WHERE s.code = $1 AND s.dim = 'total' AND ($5 OR NOT s.is_bot)
          AND s.hour >= greatest(b, date_trunc('hour', $2::timestamptz, 'UTC'))
          AND s.hour < least(b + ('1 ' || $4)::interval, $3::timestamptz)) AS count,
       (SELECT count(DISTINCT v.visitor) FROM click_visitors v
        WHERE v.code = $1 AND ($5 OR NOT v.is_bot)
          AND v.hour >= greatest(b, date_trunc('hour', $2::timestamptz, 'UTC'))
          AND v.hour < least(b + ('1 ' || $4)::interval, $3::timestamptz))
           AS visitors
FROM generate_series(date_trunc($4, $2::timestamptz, 'UTC'),
                     $3::timestamptz - interval '1 microsecond',
                     ('1 ' || $4)::interval) AS b
ORDER BY b
"""

VISITORS: Final = """
SELECT count(DISTINCT visitor) FROM click_visitors
WHERE code = $1 AND hour >= date_trunc('hour', $2::timestamptz, 'UTC') AND hour < $3
  AND ($4 OR NOT is_bot)
"""

# The first $5 values of each dimension, most clicked first, and one row
# per dimension (value NULL) summing the rest: the database sends at most
# limit + 1 rows a list, however many referrers visitors made up.
DIMENSIONS: Final = """
WITH d AS (
    SELECT dim, value, sum(count)::bigint AS count FROM click_stats
    WHERE code = $1 AND hour >= date_trunc('hour', $2::timestamptz, 'UTC') AND hour < $3
      AND ($4 OR NOT is_bot)
    GROUP BY dim, value
), ranked AS (
    SELECT dim, value, count, row_number() OVER (PARTITION BY dim ORDER BY count DESC, value) AS n
    FROM d
)
SELECT dim, value, count, n FROM ranked WHERE n <= $5
UNION ALL
SELECT dim, NULL, sum(count)::bigint, NULL FROM ranked WHERE n > $5 GROUP BY dim
ORDER BY dim, n
"""

# Each A/B destination's clicks and distinct visitors over the range.
DESTINATIONS: Final = """
SELECT d.destination, d.count, coalesce(v.visitors, 0)::bigint AS visitors
FROM (SELECT value::smallint AS destination, sum(count)::bigint AS count FROM click_stats
      WHERE code = $1 AND dim = 'destination'
        AND hour >= date_trunc('hour', $2::timestamptz, 'UTC') AND hour < $3
        AND ($4 OR NOT is_bot)
      GROUP BY value) d
LEFT JOIN (SELECT destination, count(DISTINCT visitor) AS visitors FROM destination_visitors
           WHERE code = $1 AND hour >= date_trunc('hour', $2::timestamptz, 'UTC') AND hour < $3
             AND ($4 OR NOT is_bot)
           GROUP BY destination) v USING (destination)
ORDER BY d.destination
"""

# Orphan visits of a range, all domains ($3 NULL) or one ('' the default):
# the sums by kind, then the most requested paths (not the gateways' `*`).
ORPHAN_KINDS: Final = """
SELECT kind, sum(count)::bigint AS count FROM orphan_visits
WHERE hour >= date_trunc('hour', $1::timestamptz, 'UTC') AND hour < $2
  AND ($3::text[] IS NULL OR domain = ANY($3))
GROUP BY kind
"""
ORPHAN_PATHS: Final = """
SELECT path, kind, sum(count)::bigint AS count FROM orphan_visits
WHERE hour >= date_trunc('hour', $1::timestamptz, 'UTC') AND hour < $2
  AND ($3::text[] IS NULL OR domain = ANY($3)) AND path <> '*'
GROUP BY path, kind ORDER BY count DESC, path, kind LIMIT $4
"""
TOP_PATHS: Final = 20


class Stats:
    def __init__(self, pool: asyncpg.Pool, wait: float, default_host: str = "") -> None:
        self._pool = pool
        self._wait = wait
        # The default domain (LINKFLOW_PUBLIC_URL's host): its orphan
        # visits are stored with domain ''.
        self.default_host = default_host

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[PoolConnectionProxy]:
        """One of the API pool's connections, or a 503 once every one has
        been busy for ``wait`` seconds (calls queue no longer than a query
        may run)."""
        try:
            conn = await self._pool.acquire(timeout=self._wait)
        except TimeoutError:
            raise Problem(
                503, "every stats connection is busy; try again", headers={"Retry-After": "1"}
            ) from None
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    def stored(self, hosts: frozenset[str] | None) -> frozenset[str] | None:
        """Domains (hosts) as this database keeps them: '' for the default."""
        if hosts is None:
            return None
        return frozenset("" if h == self.default_host else h for h in hosts)

    def seen(self, domain: str | None, seen: frozenset[str] | None) -> frozenset[str] | None:
        """The domains a call covers: the one it names (None: every one),
        narrowed to those its key sees (None: no limit)."""
        hosts = None if domain is None else frozenset({domain})
        if seen is not None:
            hosts = seen if hosts is None else hosts & seen
        return self.stored(hosts)

    def link(self, code: str, domain: str | None) -> tuple[str | None, str]:
        """The link a ``{code}?domain=`` call names: (None for the default
        domain, code)."""
        return (None if domain in (None, self.default_host) else domain), code

    async def link_stats(
        self,
        link: tuple[str | None, str],
        start: datetime,
        end: datetime,
        interval: str,
        include_bots: bool,
        limit: int,
    ) -> LinkStats:
        # Counted under the link's key: its code, or host/code on another
        # domain than the default (services.analytics.migrations).
        key = link_key(*link)
        # One snapshot for the four queries: a click counted between two of
        # them would otherwise be in the total and missing from the series.
        async with (
            self._connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            series = await conn.fetch(SERIES, key, start, end, interval, include_bots)
            visitors = await conn.fetchval(VISITORS, key, start, end, include_bots)
            dims = await conn.fetch(DIMENSIONS, key, start, end, include_bots, limit)
            split = await conn.fetch(DESTINATIONS, key, start, end, include_bots)
        total = 0
        lists: dict[str, list[Any]] = {dim: [] for dim in LISTS}
        others = dict.fromkeys(LISTS, 0)
        for r in dims:
            if r["dim"] == "total":
                total = r["count"]
            elif r["dim"] in LISTS:
                if r["value"] is None:
                    others[r["dim"]] = r["count"]
                else:
                    lists[r["dim"]].append(LISTS[r["dim"]](r["value"], r["count"]))
        return LinkStats(
            code=link[1],
            domain=link[0],
            total=total,
            visitors=visitors,
            series=[
                SeriesPoint(ts=r["ts"], count=r["count"], visitors=r["visitors"]) for r in series
            ],
            referrers=lists["referrer"],
            countries=lists["country"],
            devices=lists["device"],
            browsers=lists["browser"],
            oses=lists["os"],
            others=OtherCounts(
                referrers=others["referrer"],
                countries=others["country"],
                devices=others["device"],
                browsers=others["browser"],
                oses=others["os"],
            ),
            destinations=[
                DestinationCount(
                    destination=r["destination"], count=r["count"], visitors=r["visitors"]
                )
                for r in split
            ],
        )

    async def links_created(self, start: date, end: date) -> LinksCreated:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT d::date AS day, coalesce(l.count, 0) AS count "
                "FROM generate_series($1::date, $2::date, '1 day') AS d "
                "LEFT JOIN links_created_daily l ON l.day = d::date ORDER BY 1",
                start,
                end,
            )
        return LinksCreated(days=[DayCount(day=r["day"], count=r["count"]) for r in rows])

    async def top(
        self, start: datetime, end: datetime, limit: int, domains: frozenset[str] | None = None
    ) -> TopLinks:
        """``domains``: only their links ('' the default domain; None: every link)."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT code, sum(count)::bigint AS count FROM click_stats WHERE dim = 'total' "
                "AND NOT is_bot AND hour >= date_trunc('hour', $1::timestamptz, 'UTC') "
                "AND hour < $2 AND ($4::text[] IS NULL OR "
                "(CASE WHEN strpos(code, '/') > 0 THEN split_part(code, '/', 1) ELSE '' END) "
                "= ANY($4)) "
                "GROUP BY code ORDER BY count DESC, code LIMIT $3",
                start,
                end,
                limit,
                None if domains is None else sorted(domains),
            )
        items = []
        for r in rows:
            domain, code = split_link_key(r["code"])
            items.append(TopLink(code=code, domain=domain, count=r["count"]))
        return TopLinks(items=items)

    async def orphans(
        self,
        start: datetime,
        end: datetime,
        domain: str | None,
        seen: frozenset[str] | None = None,
    ) -> OrphanStats:
        """``domain`` None: every domain's the key sees (``seen``; None: all)."""
        covered = self.seen(domain, seen)
        stored = None if covered is None else sorted(covered)
        async with self._connection() as conn:
            kinds = await conn.fetch(ORPHAN_KINDS, start, end, stored)
            paths = await conn.fetch(ORPHAN_PATHS, start, end, stored, TOP_PATHS)
        by_kind = {r["kind"]: r["count"] for r in kinds}
        return OrphanStats(
            from_=start,
            to=end,
            domain=domain,
            total=sum(by_kind.values()),
            kinds=OrphanKinds(
                base_url=by_kind.get("base_url", 0),
                invalid_code=by_kind.get("invalid_code", 0),
                not_found=by_kind.get("not_found", 0),
            ),
            top_paths=[OrphanPath(path=r["path"], kind=r["kind"], count=r["count"]) for r in paths],
        )
