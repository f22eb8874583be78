"""The analytics database, owned by the analytics service alone (``linkflow migrate`` runs it)."""

from __future__ import annotations

from typing import Final

from shared.db import Migration

MIGRATION: Final = Migration(
    "analytics_database_url",
    """
-- A link is named by its key in every table here (code columns): its code
-- on the default domain, <host>/<code> on another (shared.contracts.link_key;
-- a code holds no "/"), so rows from before domains are the default domain's.

-- Every click counted once: the ledger is what makes redelivery and
-- overlapping backfills harmless (a click id already here adds nothing).
CREATE TABLE IF NOT EXISTS counted_clicks (
    id   text PRIMARY KEY,
    code text NOT NULL,
    ts   timestamptz NOT NULL
);

-- Hourly counts per link and dimension: dim 'total' (value ''), 'referrer'
-- (host), 'country', 'device' (desktop, mobile, tablet, bot), 'browser', 'os'.
CREATE TABLE IF NOT EXISTS click_stats (
    code   text NOT NULL,
    hour   timestamptz NOT NULL,
    dim    text NOT NULL,
    value  text NOT NULL,
    is_bot boolean NOT NULL,
    count  bigint NOT NULL,
    PRIMARY KEY (code, hour, dim, value, is_bot)
);
CREATE INDEX IF NOT EXISTS click_stats_hour_total ON click_stats (hour) WHERE dim = 'total';

-- The visitor ids seen per link and hour (SPEC: stats' visitors): distinct
-- ids are counted from here. An id is a hash of a salt that lived one day:
-- it says nothing about who the visitor is, and never matches across days.
CREATE TABLE IF NOT EXISTS click_visitors (
    code    text NOT NULL,
    hour    timestamptz NOT NULL,
    is_bot  boolean NOT NULL,
    visitor text NOT NULL,
    PRIMARY KEY (code, hour, is_bot, visitor)
);

-- The visitor ids per link, hour and A/B destination (SPEC: stats give each
-- destination's clicks and visitors; the clicks are click_stats' dim
-- 'destination', value the destination's index).
CREATE TABLE IF NOT EXISTS destination_visitors (
    code        text NOT NULL,
    hour        timestamptz NOT NULL,
    destination smallint NOT NULL,
    is_bot      boolean NOT NULL,
    visitor     text NOT NULL,
    PRIMARY KEY (code, hour, destination, is_bot, visitor)
);

CREATE TABLE IF NOT EXISTS links_created_daily (
    day   date PRIMARY KEY,
    count bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS backfills (
    id         text PRIMARY KEY,
    from_ts    timestamptz NOT NULL,
    to_ts      timestamptz NOT NULL,
    state      text NOT NULL,
    start_seq  bigint NOT NULL,
    end_seq    bigint NOT NULL,
    next_seq   bigint NOT NULL,
    processed  bigint NOT NULL DEFAULT 0,
    total      bigint NOT NULL,
    error      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- A re-classifying backfill replaced its range's counts (deleted when it
-- was created) and re-derives each click's bot flag, browser, OS, country.
ALTER TABLE backfills ADD COLUMN IF NOT EXISTS reclassify boolean NOT NULL DEFAULT false;

-- Human clicks of each link with a visit limit (SPEC: max_visits), counted
-- from counted_clicks' fresh rows, so each click once; since = the link's
-- created_at (a code deleted and taken again starts again from 0).
CREATE TABLE IF NOT EXISTS link_visits (
    code   text PRIMARY KEY,
    since  timestamptz NOT NULL,
    visits bigint NOT NULL
);

-- Orphan visits (SPEC: visits.orphan) per hour, domain ('' for the default
-- domain), kind and path, summed from the gateways' per-second messages.
CREATE TABLE IF NOT EXISTS orphan_visits (
    hour   timestamptz NOT NULL,
    domain text NOT NULL,
    kind   text NOT NULL,
    path   text NOT NULL,
    count  bigint NOT NULL,
    PRIMARY KEY (hour, domain, kind, path)
);
""",
    # Its rows come and go (a re-classifying backfill deletes its range's);
    # its tables stay as migrate made them.
    grants=tuple(
        ("analytics", f"SELECT, INSERT, UPDATE, DELETE ON {table}")
        for table in (
            "counted_clicks",
            "click_stats",
            "click_visitors",
            "destination_visitors",
            "links_created_daily",
            "backfills",
            "link_visits",
            "orphan_visits",
        )
    ),
)
