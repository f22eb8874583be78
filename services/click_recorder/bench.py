"""What ``linkflow bench --inserts`` measures of the recorder, provided
through the ``linkflow.bench`` entry points so that shared/ imports no
service: a ``clicks`` table filled with generated rows, and the recorder's
own INSERT's rate into it."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from services.click_recorder.migrations import MIGRATION
from services.click_recorder.partitions import Partitions
from services.click_recorder.recorder import ClickRecorder
from shared import db
from shared.contracts import Click, click_id

# 10,000 links, the clicks spread evenly over the last year's days;
# ids, like the gateway's, are the nanosecond time then 48 other bits.
_FILL_DAY = """
INSERT INTO clicks_load
SELECT lpad(to_hex((extract(epoch FROM t) * 1e9)::bigint), 16, '0') || lpad(to_hex(n), 12, '0'),
       'c' || ((n * 7919) % 10000),
       t,
       'https://news.example/' || (n % 97),
       'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0',
       '203.0.113.' || (n % 256),
       'DE',
       n % 10 = 0,
       md5(n::text),
       t
FROM (SELECT n, $1::timestamptz + (n - 1) * ($2::timestamptz - $1::timestamptz) / $3 AS t
      FROM generate_series(1::bigint, $3::bigint) AS n) AS s
"""


async def fill(url: str, rows: int, days: int = 365) -> int:
    """``rows`` clicks over the last ``days`` days (today up to now), loaded
    a day at a time the way a bulk load is done: into a plain table, indexed
    once, then attached as the day's partition. Days already filled (a kept
    data directory) are left alone. Returns the rows in ``clicks``."""
    await db.ensure_database(url)
    await db.migrate(url, MIGRATION.sql)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET maintenance_work_mem = '512MB'")
        now = datetime.now(UTC)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        per = rows // days
        for back in range(days):
            start = today - timedelta(days=back)
            end = start + timedelta(days=1)
            name = f"clicks_p{start:%Y%m%d}"
            have = await conn.fetchval(
                f"SELECT count(*) FROM (SELECT 1 FROM {name} LIMIT 1) AS x"  # noqa: S608
                if await conn.fetchval("SELECT to_regclass($1)", name)
                else "SELECT 0"
            )
            if have:
                continue
            async with conn.transaction():
                await conn.execute(f"DROP TABLE IF EXISTS {name}")
                await conn.execute("DROP TABLE IF EXISTS clicks_load")
                await conn.execute("CREATE TABLE clicks_load (LIKE clicks INCLUDING DEFAULTS)")
                await conn.execute(_FILL_DAY, start, min(end, now), per)
                await conn.execute("ALTER TABLE clicks_load ADD PRIMARY KEY (id, ts)")
                await conn.execute("CREATE INDEX ON clicks_load (code, ts)")
                await conn.execute(
                    "ALTER TABLE clicks_load ADD CONSTRAINT in_day "
                    f"CHECK (ts >= '{start.isoformat()}' AND ts < '{end.isoformat()}')"
                )
                await conn.execute(
                    "ALTER TABLE clicks ATTACH PARTITION clicks_load "
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                )
                await conn.execute("ALTER TABLE clicks_load DROP CONSTRAINT in_day")
                await conn.execute(f"ALTER TABLE clicks_load RENAME TO {name}")
        await conn.execute("ANALYZE clicks")
        return int(await conn.fetchval("SELECT count(*) FROM clicks"))
    finally:
        await conn.close()


async def insert_rate(url: str, clicks: int, batch: int = 500) -> float:
    """Clicks/s through the recorder's INSERT (its own code path, batches of
    ``batch`` one after another as one worker loop sends them), each batch
    committed durably before the next, as a batch is before its acks."""
    pool = await db.create_pool(url, max_size=1)
    try:
        recorder = ClickRecorder(pool, Partitions(pool, 0))
        spent = 0.0
        for _ in range(clicks // batch):
            rows = [
                Click(
                    id=click_id(),
                    code=f"c{random.randrange(10000)}",
                    ts=datetime.now(UTC),
                    referrer="https://news.example/1",
                    user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
                    ip="203.0.113.0",
                    country="DE",
                    request_id=click_id(),
                )
                for _ in range(batch)
            ]
            started = time.perf_counter()
            await recorder.insert(rows)
            spent += time.perf_counter() - started
        return (clicks // batch) * batch / spent
    finally:
        await pool.close()
