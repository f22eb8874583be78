"""What a `stats:read` key can cost analytics: bounded ranges, bounded
lists, queries that time out, and none of it on the click consumer's
connections (SPEC, "Analytics HTTP API" and "Limits")."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from nats.aio.client import Client

from tests.abuse import tuned
from tests.harness import eventually
from tests.integration.test_analytics import human, publish
from tests.servers import Servers

PROBLEM = "application/problem+json"


def refused(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert [e["field"] for e in r.json()["errors"]] == [field], r.text


async def test_series_longer_than_their_interval_allows_are_refused_at_once(
    analytics: httpx.AsyncClient,
) -> None:
    now = datetime.now(UTC)
    ago = (now - timedelta(days=32)).isoformat()
    # Cheap ones first: on a service without the bound they answer 200.
    refused(
        await analytics.get("/api/stats/links/x", params={"from": ago, "interval": "hour"}), "from"
    )
    within = {"from": (now - timedelta(days=31)).isoformat(), "to": now.isoformat()}
    r = await analytics.get("/api/stats/links/x", params={**within, "interval": "hour"})
    assert r.status_code == 200, r.text
    assert len(r.json()["series"]) in (31 * 24, 31 * 24 + 1)
    far = {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"}
    started = time.monotonic()
    refused(await analytics.get("/api/stats/links/x", params={**far, "interval": "hour"}), "from")
    refused(await analytics.get("/api/stats/links/x", params={**far, "interval": "day"}), "from")
    refused(await analytics.get("/api/stats/top", params=far), "from")
    refused(await analytics.get("/api/stats/links-created", params=far), "from")
    assert time.monotonic() - started < 2
    ten_years = {
        "from": (now - timedelta(days=3660)).isoformat(),
        "to": now.isoformat(),
        "interval": "day",
    }
    r = await analytics.get("/api/stats/links/x", params=ten_years)
    assert r.status_code == 200, r.text


async def test_lists_hold_limit_entries_and_others_count_the_rest(
    analytics: httpx.AsyncClient, nc: Client
) -> None:
    # Referrer k has k + 1 clicks: 13 referrers, 91 clicks, all from DE.
    clicks = [
        human("many", referrer=f"https://r{k:02d}.example/")
        for k in range(13)
        for _ in range(k + 1)
    ]
    await publish(nc, clicks)

    async def stats(**params: str) -> httpx.Response:
        return await analytics.get("/api/stats/links/many", params=params)

    async def counted() -> bool:
        return (await stats()).json()["total"] == 91

    await eventually(counted, what="91 clicks counted")
    body = (await stats(limit="5")).json()
    assert body["referrers"] == [
        {"referrer": f"r{k:02d}.example", "count": k + 1} for k in (12, 11, 10, 9, 8)
    ]
    assert body["others"] == {
        "referrers": 91 - (13 + 12 + 11 + 10 + 9),
        "countries": 0,
        "devices": 0,
        "browsers": 0,
        "oses": 0,
    }
    assert body["countries"] == [{"country": "DE", "count": 91}]
    default = (await stats()).json()
    assert len(default["referrers"]) == 10
    assert default["others"]["referrers"] == 1 + 2 + 3
    everything = (await stats(limit="100")).json()
    assert len(everything["referrers"]) == 13
    assert everything["others"]["referrers"] == 0
    for bad in ("0", "101", "ten"):
        refused(await stats(limit=bad), "limit")


async def test_busy_api_queries_never_stop_the_click_consumer(
    servers: Servers, db_url: str, admin_key: str, nc: Client
) -> None:
    """Every API connection held by a stuck query (here: waiting on a lock
    the test holds), and more calls queued behind them: clicks are still
    counted, on the consumer's own connections."""
    async with tuned.analytics(
        servers, db_url, admin_key, api_connections=2, statement_timeout=30.0
    ) as client:
        async with tuned.locked(db_url, "links_created_daily", "ACCESS EXCLUSIVE"):
            # More than the old shared pool's six connections, so that the
            # test shows the consumer apart whatever the API pool's size.
            calls = [
                asyncio.create_task(client.get("/api/stats/links-created", timeout=60))
                for _ in range(8)
            ]

            async def stuck() -> bool:
                return await tuned.waiting_on_locks(db_url, "links_created_daily") >= 2

            await eventually(stuck, what="the API's connections stuck on the lock")
            await publish(nc, [human("apart") for _ in range(5)])
            await eventually(
                lambda: counted(db_url, "apart", 5),
                timeout=10,
                what="clicks counted while the API is stuck",
            )
            assert not any(c.done() for c in calls[:2])
        answers = await asyncio.gather(*calls)
    assert {r.status_code for r in answers} <= {200, 503}
    assert any(r.status_code == 200 for r in answers)


async def counted(db_url: str, code: str, want: int) -> bool:
    conn = await asyncpg.connect(db_url)
    try:
        n = await conn.fetchval(
            "SELECT coalesce(sum(count), 0) FROM click_stats WHERE code = $1 AND dim = 'total'",
            code,
        )
    finally:
        await conn.close()
    return bool(n == want)


async def test_a_query_past_the_statement_timeout_is_a_503_problem(
    servers: Servers, db_url: str, admin_key: str
) -> None:
    async with tuned.analytics(servers, db_url, admin_key, statement_timeout=0.5) as client:
        async with tuned.locked(db_url, "links_created_daily", "ACCESS EXCLUSIVE"):
            started = time.monotonic()
            r = await client.get("/api/stats/links-created", timeout=20)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == PROBLEM
            assert "statement timeout" in r.json()["detail"]
            assert int(r.headers["retry-after"]) >= 1
            assert time.monotonic() - started < 5
        # The connection the timeout hit serves the next call.
        r = await client.get("/api/stats/links-created")
        assert r.status_code == 200, r.text
