"""The visit counter's tables (SPEC: max_visits), in the links database."""

from __future__ import annotations

from typing import Final

from shared.db import Migration

MIGRATION: Final = Migration(
    "database_url",
    """
-- One row per human click counted against a visit limit: a redelivered
-- click hits the primary key and is not counted twice. Only links with
-- max_visits get rows, so the table grows with the limits, not the traffic.
CREATE TABLE IF NOT EXISTS link_visits (
    id    text PRIMARY KEY,
    code  text NOT NULL,
    since timestamptz NOT NULL
);
-- Each limited link's count for its generation (since = the link's
-- created_at; a code deleted and taken again starts again from 0).
CREATE TABLE IF NOT EXISTS link_visit_counts (
    code   text PRIMARY KEY,
    since  timestamptz NOT NULL,
    visits bigint NOT NULL
);
""",
)
