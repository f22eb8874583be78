"""The ``clicks`` table, written by the click-recorder alone (``linkflow migrate`` runs it).

``clicks`` is partitioned by day of ``ts`` (UTC), so that it can grow for
years: a new click's indexes are today's, small enough to stay in memory
whatever the table holds, and the recorder's retention drops whole days
(``DROP TABLE``: no ``DELETE``, no vacuum). Monthly partitions were tried
first: with 50 million clicks over a year, inserts ran at 0.72x an empty
table's (the month's indexes no longer fit in PostgreSQL's buffers).

The primary key is ``(id, ts)`` because a partitioned table's unique keys
must hold its partition key; a redelivered click carries the ``ts`` the
gateway gave it, so it lands in the same partition and still meets
``ON CONFLICT``.

A table from before partitioning (a plain ``clicks``) is converted in
place: its rows are copied into daily partitions, in the migration's one
transaction.
"""

from __future__ import annotations

from typing import Final

from shared.db import Migration

MIGRATION: Final = Migration(
    "database_url",
    """
DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('clicks')) = 'r' THEN
        ALTER TABLE clicks RENAME TO clicks_unpartitioned;
        ALTER INDEX IF EXISTS clicks_pkey RENAME TO clicks_unpartitioned_pkey;
        ALTER INDEX IF EXISTS clicks_code_ts RENAME TO clicks_unpartitioned_code_ts;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS clicks (
    id          text NOT NULL,
    code        text NOT NULL,
    ts          timestamptz NOT NULL,
    referrer    text,
    user_agent  text,
    ip          text,
    country     text,
    is_bot      boolean NOT NULL DEFAULT false,
    request_id  text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS clicks_code_ts ON clicks (code, ts);
-- The redirect rule that matched (SPEC: a click's rule), null for none.
ALTER TABLE clicks ADD COLUMN IF NOT EXISTS rule smallint;
-- The visitor id (SPEC): a hash whose salt lived one day; no IP in it.
ALTER TABLE clicks ADD COLUMN IF NOT EXISTS visitor text;
-- The link's short domain (SPEC: Domains), null for the default one.
ALTER TABLE clicks ADD COLUMN IF NOT EXISTS domain text;
-- The A/B destination drawn (SPEC: destinations), null for none.
ALTER TABLE clicks ADD COLUMN IF NOT EXISTS destination smallint;

-- Every day from first's to last's (UTC) gets its partition, clicks_pYYYYMMDD.
-- Returns how many it created. Both functions run as their owner (the
-- migrator), so that the recorder's role makes and drops partitions of
-- clicks without owning it or creating anything else (README, "Database
-- roles"); their search_path is pinned, as a SECURITY DEFINER's must be.
CREATE OR REPLACE FUNCTION linkflow_click_partitions(first timestamptz, last timestamptz)
RETURNS integer LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $f$
DECLARE
    day timestamp := date_trunc('day', first AT TIME ZONE 'UTC');
    name text;
    made integer := 0;
BEGIN
    -- A caller other than the owner (the recorder's role) makes at most 400
    -- days' partitions a call: its identity cannot make millions of tables.
    -- (The owner, migrating old clicks, may span more.)
    IF session_user <> current_user AND last - first > interval '400 days' THEN
        RAISE EXCEPTION 'at most 400 days of click partitions at once';
    END IF;
    -- Replicas of the recorder start together; one creates, the others see it.
    PERFORM pg_advisory_xact_lock(7310002);
    WHILE day <= last AT TIME ZONE 'UTC' LOOP
        name := 'clicks_p' || to_char(day, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF clicks FOR VALUES FROM (%L) TO (%L)',
                name, day AT TIME ZONE 'UTC', (day + interval '1 day') AT TIME ZONE 'UTC');
            made := made + 1;
        END IF;
        day := day + interval '1 day';
    END LOOP;
    RETURN made;
END $f$;

-- Drops every daily partition whose whole day ends at or before cutoff;
-- returns the names it dropped.
CREATE OR REPLACE FUNCTION linkflow_drop_click_partitions(cutoff timestamptz)
RETURNS SETOF text LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $f$
DECLARE
    name text;
BEGIN
    -- Retention keeps at least the last day's clicks, whoever asks.
    IF cutoff > now() - interval '1 day' THEN
        RAISE EXCEPTION 'click partitions of the last day are never dropped';
    END IF;
    PERFORM pg_advisory_xact_lock(7310002);
    FOR name IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'clicks'::regclass AND c.relname ~ '^clicks_p[0-9]{8}$'
        ORDER BY c.relname
    LOOP
        IF (to_timestamp(substr(name, 9), 'YYYYMMDD')::timestamp + interval '1 day')
                AT TIME ZONE 'UTC' <= cutoff THEN
            EXECUTE format('DROP TABLE %I', name);
            RETURN NEXT name;
        END IF;
    END LOOP;
END $f$;

DO $$
BEGIN
    IF to_regclass('clicks_unpartitioned') IS NOT NULL THEN
        PERFORM linkflow_click_partitions(min(ts), max(ts)) FROM clicks_unpartitioned
            HAVING count(*) > 0;
        INSERT INTO clicks SELECT * FROM clicks_unpartitioned;
        DROP TABLE clicks_unpartitioned;
    END IF;
END $$;

-- Today and the next week exist before their first click arrives.
SELECT linkflow_click_partitions(now(), now() + interval '7 days');
""",
    grants=(
        # Inserting through the parent: a partition's own rights are not asked.
        # It reads every column: ON CONFLICT (id, ts), and the raw clicks'
        # export (GET /api/clicks). Neither updates nor deletes.
        ("click_recorder", "SELECT, INSERT ON clicks"),
        *(
            ("click_recorder", f"EXECUTE ON FUNCTION {f}")
            for f in (
                "linkflow_click_partitions(timestamptz, timestamptz)",
                "linkflow_drop_click_partitions(timestamptz)",
            )
        ),
    ),
)
