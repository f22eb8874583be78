"""The ``clicks`` table, written by the click-recorder alone (``linkflow migrate`` runs it)."""

from __future__ import annotations

from typing import Final

from shared.db import Migration

MIGRATION: Final = Migration(
    "database_url",
    """
CREATE TABLE IF NOT EXISTS clicks (
    id          text PRIMARY KEY,
    code        text NOT NULL,
    ts          timestamptz NOT NULL,
    referrer    text,
    user_agent  text,
    ip          text,
    country     text,
    is_bot      boolean NOT NULL DEFAULT false,
    request_id  text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS clicks_code_ts ON clicks (code, ts);
""",
)
