"""``clicks`` by day: partitions made ahead and on demand, a retention that
drops whole days and leaves analytics' counts alone, and a table from
before partitioning converted with every row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from nats.aio.client import Client

from services.click_recorder.partitions import Partitions
from services.click_recorder.settings import Settings as RecorderSettings
from services.link.clicks import click_id
from shared import db
from shared.contracts import Click, encode
from shared.jetstream import topology
from shared.settings import SettingsError, load
from tests.harness import count, eventually
from tests.servers import migrate_main


def day(ts: datetime) -> str:
    return f"clicks_p{ts.astimezone(UTC):%Y%m%d}"


def day_end(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


async def partitions(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'clicks'::regclass ORDER BY 1"
        )
        return [r["relname"] for r in rows]
    finally:
        await conn.close()


async def publish(nc: Client, clicks: list[Click], suffix: str = "") -> None:
    js = nc.jetstream()
    for c in clicks:
        await js.publish(f"clicks.{c.code}", encode(c), headers={"Nats-Msg-Id": c.id + suffix})


def at(code: str, ts: datetime) -> Click:
    return Click(id=click_id(), code=code, ts=ts, user_agent="Mozilla/5.0")


async def test_today_and_the_next_week_are_ready_and_the_key_holds_ts(db_url: str) -> None:
    now = datetime.now(UTC)
    made = await partitions(db_url)
    assert {day(now + timedelta(days=d)) for d in range(8)} <= set(made)
    key = await count(
        db_url,
        "SELECT count(*) FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = 'clicks'::regclass AND i.indisprimary AND a.attname IN ('id', 'ts')",
    )
    assert key == 2


async def test_a_click_from_a_day_without_a_partition_is_stored_once(
    nc: Client, recorder: None, db_url: str
) -> None:
    """A click replayed from two years ago: its day is made on demand, and
    a second copy (a new Nats-Msg-Id, as a DLQ replay sends it) lands in the
    same partition and is absorbed by the key."""
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=730)
    assert day(old) not in await partitions(db_url)
    clicks = [at("old", old), at("old", datetime.now(UTC))]
    await publish(nc, clicks)
    await publish(nc, clicks, suffix="-again")

    async def stored() -> bool:
        return await count(db_url, "SELECT count(*) FROM clicks WHERE code = 'old'") == 2

    await eventually(stored, what="both clicks stored")
    assert day(old) in await partitions(db_url)
    in_its_day = await count(db_url, f"SELECT count(*) FROM {day(old)}")
    assert in_its_day == 1
    # Every copy settled, none doubled.
    await eventually(lambda: _settled(nc), what="the copies acked")
    assert await count(db_url, "SELECT count(*) FROM clicks WHERE code = 'old'") == 2


async def _settled(nc: Client) -> bool:
    info = await nc.jetstream().consumer_info(topology.CLICKS, topology.CLICK_RECORDER.name)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_retention_drops_whole_days_and_analytics_keeps_its_counts(
    nc: Client, recorder: None, analytics: httpx.AsyncClient, db_url: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    ages = [0, 1, 2.5, 3.2, 10, 40]
    clicks = [at("kept", now - timedelta(days=d)) for d in ages]
    await publish(nc, clicks)

    async def stored() -> bool:
        return await count(db_url, "SELECT count(*) FROM clicks") == len(clicks)

    await eventually(stored, what="every click stored")
    since = {"from": (now - timedelta(days=365)).isoformat(), "include_bots": "true"}

    async def counted() -> bool:
        r = await analytics.get("/api/stats/links/kept", params=since)
        return int(r.json()["total"]) == len(clicks)

    await eventually(counted, what="every click counted")

    retention = timedelta(days=3)
    pool = await db.create_pool(db_url)
    try:
        await Partitions(pool, retention.total_seconds()).maintain()
    finally:
        await pool.close()

    cutoff = datetime.now(UTC) - retention
    # A day goes once all of it is older than the retention; no click younger does.
    kept = [c for c in clicks if day_end(c.ts) > cutoff]
    assert len(kept) < len(clicks)
    left = await count(db_url, "SELECT count(*) FROM clicks")
    assert left == len(kept)
    remaining = await partitions(db_url)
    assert {day(c.ts) for c in kept} <= set(remaining)
    assert not {day(c.ts) for c in clicks if c not in kept} & set(remaining)
    # Analytics' aggregates live apart: its counts are what they were.
    r = await analytics.get("/api/stats/links/kept", params=since)
    assert r.json()["total"] == len(clicks)


async def test_a_table_from_before_partitioning_is_converted_with_every_row(
    db_url: str,
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("DROP TABLE clicks CASCADE")
        # The table as linkflow made it before partitioning.
        await conn.execute(
            """
            CREATE TABLE clicks (
                id text PRIMARY KEY, code text NOT NULL, ts timestamptz NOT NULL,
                referrer text, user_agent text, ip text, country text,
                is_bot boolean NOT NULL DEFAULT false, request_id text,
                recorded_at timestamptz NOT NULL DEFAULT now());
            CREATE INDEX clicks_code_ts ON clicks (code, ts);
            INSERT INTO clicks (id, code, ts, user_agent)
            SELECT 'c' || n, 'legacy', now() - n * interval '9 days', 'Mozilla/5.0'
            FROM generate_series(1, 60) AS n;
            """
        )
        before = await conn.fetch("SELECT * FROM clicks ORDER BY id")
    finally:
        await conn.close()

    await migrate_main(db_url)
    await migrate_main(db_url)  # and again: nothing changes

    conn = await asyncpg.connect(db_url)
    try:
        kind = await conn.fetchval("SELECT relkind FROM pg_class WHERE oid = 'clicks'::regclass")
        after = await conn.fetch("SELECT * FROM clicks ORDER BY id")
        left_behind = await conn.fetchval("SELECT to_regclass('clicks_unpartitioned')")
    finally:
        await conn.close()
    assert kind == b"p"
    assert left_behind is None
    # Every row as it was, and the columns added since (the matching rule,
    # the visitor, the domain, the A/B destination) empty.
    empty = {"rule": None, "visitor": None, "domain": None, "destination": None}
    assert [{**dict(r), **empty} for r in before] == [dict(r) for r in after]
    days = {day(r["ts"]) for r in before}
    assert days <= set(await partitions(db_url))


def test_the_retention_is_a_duration_and_keeps_everything_by_default() -> None:
    assert load(RecorderSettings, "click_recorder", {}).retention == 0
    env = {"LINKFLOW_CLICK_RECORDER_RETENTION": "400d"}
    assert load(RecorderSettings, "click_recorder", env).retention == 400 * 86400
    with pytest.raises(SettingsError, match="not a duration"):
        load(RecorderSettings, "click_recorder", {"LINKFLOW_CLICK_RECORDER_RETENTION": "1y"})
