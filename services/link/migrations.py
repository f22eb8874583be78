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
-- Added with redirect rules (SPEC: max_visits, forward_query, rules).
ALTER TABLE links ADD COLUMN IF NOT EXISTS max_visits integer;
ALTER TABLE links ADD COLUMN IF NOT EXISTS forward_query boolean NOT NULL DEFAULT false;
ALTER TABLE links ADD COLUMN IF NOT EXISTS rules jsonb NOT NULL DEFAULT '[]';
CREATE INDEX IF NOT EXISTS links_live_created ON links (created_at DESC, code DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS links_tags ON links USING gin (tags);

-- Every version of every link (SPEC: history), written by the trigger below
-- so that no writer can change a link without leaving its version: create,
-- each PATCH, delete, an import, a code taken again. changed_by is the API
-- key's name the gateway sets for the transaction (linkflow.actor); null for
-- versions from before history was kept, or with LINKFLOW_AUTH=off.
CREATE TABLE IF NOT EXISTS link_versions (
    code          text NOT NULL,
    version       integer NOT NULL,
    url           text NOT NULL,
    redirect_type smallint NOT NULL,
    tags          text[] NOT NULL,
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL,
    changed_at    timestamptz NOT NULL,
    deleted_at    timestamptz,
    changed_by    text,
    PRIMARY KEY (code, version)
);
ALTER TABLE link_versions ADD COLUMN IF NOT EXISTS max_visits integer;
ALTER TABLE link_versions ADD COLUMN IF NOT EXISTS forward_query boolean NOT NULL DEFAULT false;
ALTER TABLE link_versions ADD COLUMN IF NOT EXISTS rules jsonb NOT NULL DEFAULT '[]';

-- Short domains (SPEC: Domains): a code is unique per domain. '' is the
-- default domain (null in the API and on the bus): a key column cannot be
-- null. Links from before domains are the default domain's.
ALTER TABLE links ADD COLUMN IF NOT EXISTS domain text NOT NULL DEFAULT '';
ALTER TABLE link_versions ADD COLUMN IF NOT EXISTS domain text NOT NULL DEFAULT '';
DO $d$
BEGIN
    IF (SELECT array_length(conkey, 1) FROM pg_constraint
        WHERE conrelid = 'links'::regclass AND contype = 'p') = 1 THEN
        ALTER TABLE links DROP CONSTRAINT links_pkey, ADD PRIMARY KEY (domain, code);
    END IF;
    IF (SELECT array_length(conkey, 1) FROM pg_constraint
        WHERE conrelid = 'link_versions'::regclass AND contype = 'p') = 2 THEN
        ALTER TABLE link_versions DROP CONSTRAINT link_versions_pkey,
            ADD PRIMARY KEY (domain, code, version);
    END IF;
END $d$;
-- A/B destinations (SPEC: destinations): [{url, weight}], null: none.
ALTER TABLE links ADD COLUMN IF NOT EXISTS destinations jsonb;
ALTER TABLE link_versions ADD COLUMN IF NOT EXISTS destinations jsonb;
-- A social preview (SPEC: preview): {title, description, image}, null: none.
ALTER TABLE links ADD COLUMN IF NOT EXISTS preview jsonb;
ALTER TABLE link_versions ADD COLUMN IF NOT EXISTS preview jsonb;
-- A password (SPEC: password): its Argon2id hash alone, null: none. History
-- keeps whether a version was protected, never the hash.
ALTER TABLE links ADD COLUMN IF NOT EXISTS password_hash text;
ALTER TABLE link_versions ADD COLUMN IF NOT EXISTS password_protected boolean NOT NULL
    DEFAULT false;
-- Whether a domain still has links (a domain is removed only without).
CREATE INDEX IF NOT EXISTS links_live_domain ON links (domain) WHERE deleted_at IS NULL;

CREATE OR REPLACE FUNCTION linkflow_link_version() RETURNS trigger
LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO link_versions (domain, code, version, url, redirect_type, tags, expires_at,
                               max_visits, forward_query, rules, destinations, preview,
                               password_protected,
                               created_at, changed_at, deleted_at, changed_by)
    VALUES (NEW.domain, NEW.code, NEW.version, NEW.url, NEW.redirect_type, NEW.tags,
            NEW.expires_at, NEW.max_visits, NEW.forward_query, NEW.rules, NEW.destinations,
            NEW.preview, NEW.password_hash IS NOT NULL,
            NEW.created_at, NEW.updated_at, NEW.deleted_at,
            nullif(current_setting('linkflow.actor', true), ''))
    ON CONFLICT (domain, code, version) DO NOTHING;
    RETURN NULL;
END $f$;

CREATE OR REPLACE TRIGGER links_versions AFTER INSERT OR UPDATE ON links
    FOR EACH ROW EXECUTE FUNCTION linkflow_link_version();

-- Links from before history was kept: their current version, at least.
INSERT INTO link_versions (domain, code, version, url, redirect_type, tags, expires_at,
                           max_visits, forward_query, rules, created_at, changed_at, deleted_at)
SELECT domain, code, version, url, redirect_type, tags, expires_at, max_visits, forward_query,
       rules, created_at, updated_at, deleted_at
FROM links
ON CONFLICT (domain, code, version) DO NOTHING;

-- API keys live in the NATS KV bucket api_keys (shared.http.keys), which every
-- service watches; this table was planned for them and never written.
DROP TABLE IF EXISTS api_keys;
""",
    grants=(
        # Links are never deleted (a deleted link is a row with deleted_at).
        ("link", "SELECT, INSERT, UPDATE ON links"),
        # The trigger writes a version as whoever changed the link; history reads them.
        ("link", "SELECT, INSERT ON link_versions"),
        # The cache-refresher re-reads links to repair the KV bucket, nothing more.
        ("cache_refresher", "SELECT ON links"),
    ),
)
