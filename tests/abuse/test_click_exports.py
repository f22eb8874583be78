"""What a `stats:read` key can cost the click-recorder through its raw
export (SPEC, "Limits"): at most two exports at once per process (429 with
Retry-After beyond, the slot given back however an export ends), a range
of at most 31 days, and none of it on the worker loops' connections."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from nats.aio.client import Client

from services.click_recorder.partitions import Partitions
from shared import db
from tests.abuse import tuned
from tests.harness import assert_only_the_web_app, count, eventually
from tests.integration.test_click_export import bulk, click, publish

PROBLEM = "application/problem+json"


async def test_a_third_export_is_refused_while_two_run(
    recorder_api: httpx.AsyncClient, nc: Client, db_url: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        # Both exports reach their cursor's first fetch and wait there on the
        # test's lock, their answers begun.
        await stack.enter_async_context(tuned.locked(db_url, "clicks", "ACCESS EXCLUSIVE"))
        running = [
            await stack.enter_async_context(recorder_api.stream("GET", "/api/clicks", timeout=60))
            for _ in range(2)
        ]
        assert [r.status_code for r in running] == [200, 200]

        async def both_waiting() -> bool:
            return await tuned.waiting_on_locks(db_url, "FROM clicks") == 2

        await eventually(both_waiting, what="two exports waiting on the lock")
        scraped = (await recorder_api.get("/metrics")).text
        assert "\nlinkflow_click_exports_running 2.0\n" in scraped
        third = await recorder_api.get("/api/clicks", timeout=5)
        assert third.status_code == 429, third.text
        assert third.headers["content-type"] == PROBLEM
        assert int(third.headers["retry-after"]) >= 1
        assert "2 click exports are running" in third.json()["detail"]
        # Clients that go away give their slots back, the lock still held.
        for r in running:
            await r.aclose()

        async def admitted() -> bool:
            r = await stack.enter_async_context(
                recorder_api.stream("GET", "/api/clicks", timeout=60)
            )
            if r.status_code == 429:
                await r.aclose()
            return r.status_code == 200

        await eventually(admitted, what="an export admitted again")

        async def one_waiting() -> bool:
            return await tuned.waiting_on_locks(db_url, "FROM clicks") == 1

        await eventually(one_waiting, what="only the new export waiting on the lock")
    # The lock gone: exports answer whole again.
    for _ in range(3):
        r = await recorder_api.get("/api/clicks", params={"format": "ndjson"})
        assert r.status_code == 200, r.text
        assert r.text == ""


async def test_a_range_past_31_days_is_refused_at_once(recorder_api: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    for start in (now - timedelta(days=31, seconds=1), datetime(1970, 1, 1, tzinfo=UTC)):
        r = await recorder_api.get(
            "/api/clicks", params={"from": start.isoformat(), "to": now.isoformat()}
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == PROBLEM
        assert [e["field"] for e in r.json()["errors"]] == ["from"]
        assert "31 days" in r.text
    within = {"from": (now - timedelta(days=31)).isoformat(), "to": now.isoformat()}
    assert (await recorder_api.get("/api/clicks", params=within)).status_code == 200


async def test_exports_never_hold_the_recorders_connections(
    recorder_api: httpx.AsyncClient, nc: Client, db_url: str
) -> None:
    """Two exports held open by clients that stopped reading, each with its
    transaction and connection: the partition upkeep gives way to them, and
    clicks published meanwhile are recorded."""
    end = datetime.now(UTC) - timedelta(hours=1)
    await bulk(db_url, 100_000, end - timedelta(hours=6), end)
    window = {"from": (end - timedelta(hours=6)).isoformat(), "to": end.isoformat()}
    ahead = f"clicks_p{datetime.now(UTC) + timedelta(days=7):%Y%m%d}"
    owner = await asyncpg.connect(db_url)
    try:
        await owner.execute(f"DROP TABLE {ahead}")  # a day the upkeep will want to make
    finally:
        await owner.close()
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            r = await stack.enter_async_context(
                recorder_api.stream("GET", "/api/clicks", params=window, timeout=60)
            )
            assert r.status_code == 200

        async def both_held() -> bool:
            return await exporting(db_url) == 2

        await eventually(both_held, what="two exports holding their transactions")
        # The partition upkeep, which locks clicks whole to make a missing
        # day, puts it off rather than queue every insert behind the exports.
        pool = await db.create_pool(db_url)
        try:
            began = time.monotonic()
            await Partitions(pool, 0).maintain()
            assert time.monotonic() - began < 5
        finally:
            await pool.close()
        assert await count(db_url, f"SELECT count(*) FROM pg_class WHERE relname = '{ahead}'") == 0
        clicks = [click("during", datetime.now(UTC)) for _ in range(50)]
        await publish(nc, clicks)

        async def recorded() -> bool:
            return await count(db_url, "SELECT count(*) FROM clicks WHERE code = 'during'") == 50

        await eventually(recorded, what="50 clicks recorded while two exports are held")
        assert await exporting(db_url) == 2  # still held: the clients read nothing


async def exporting(db_url: str) -> int:
    """Sessions in an export's transaction (a cursor over clicks open)."""
    return await count(
        db_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_xid IS NULL AND xact_start IS NOT NULL AND query LIKE '%FROM clicks%' "
        "AND query LIKE '%ORDER BY ts, id%' AND pid <> pg_backend_pid()",
    )


async def test_only_the_web_app_may_export_from_a_browser(recorder_api: httpx.AsyncClient) -> None:
    """CORS on the raw export: the web app's origin may read it from a
    browser, its file name included; another site's page may not, and the
    web app may ask for nothing but reads."""
    allowed = await assert_only_the_web_app(recorder_api, "/api/clicks", "GET", "DELETE")
    assert allowed.status_code == 200, allowed.text
    assert "content-disposition" in allowed.headers["access-control-expose-headers"].lower()
