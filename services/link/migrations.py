"""The ``links`` table, owned by the link service (``linkflow migrate`` runs it)."""

from __future__ import annotations

from typing import Final

from shared.db import Migration

MIGRATION: Final = Migration(
    "database_url",
    """
CREATE TABLE IF NOT EXISTS links (
    code          text PRIMARY KEY,
    url           text NOT NULL,
    redirect_type smallint NOT NULL DEFAULT 302,
    tags          text[] NOT NULL DEFAULT '{}',
    expires_at    timestamptz,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- Deleted links stay as rows so that their version keeps increasing
    -- if the code is created again, and repairs can tell deleted from unknown.
    deleted_at    timestamptz
);
CREATE INDEX IF NOT EXISTS links_live_created ON links (created_at DESC, code DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS links_tags ON links USING gin (tags);

-- API keys live in the NATS KV bucket api_keys (shared.http.keys), which every
-- service watches; this table was planned for them and never written.
DROP TABLE IF EXISTS api_keys;
""",
)
