-- The webhooks service's own database. Applied at every start, idempotently,
-- under pg_advisory_lock (several replicas may start at once).
CREATE TABLE IF NOT EXISTS endpoints (
  id text PRIMARY KEY,
  url text NOT NULL,
  events text[] NOT NULL,
  codes text[] NOT NULL DEFAULT '{}',
  tags text[] NOT NULL DEFAULT '{}',
  domains text[] NOT NULL DEFAULT '{}',
  description text NOT NULL DEFAULT '',
  enabled boolean NOT NULL DEFAULT true,
  disabled_reason text,
  secret text NOT NULL,
  previous_secret text,
  previous_secret_until timestamptz,
  consecutive_failures integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS deliveries (
  id text PRIMARY KEY,                 -- msg_…: the webhook-id, stable across retries
  endpoint_id text NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
  event_id text NOT NULL,              -- <stream>/<Nats-Msg-Id>: a redelivered event makes no second delivery
  event_type text NOT NULL,
  body text NOT NULL,                  -- the exact JSON sent, built once: retries are byte-identical
  request_id text,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  last_status_code integer,
  last_error text,
  next_attempt_at timestamptz,
  lease_until timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (endpoint_id, event_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_newest ON deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deliveries_age ON deliveries (created_at);

CREATE TABLE IF NOT EXISTS attempts (
  delivery_id text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
  n integer NOT NULL,
  at timestamptz NOT NULL,
  duration_ms integer NOT NULL,
  status_code integer,
  error text,
  PRIMARY KEY (delivery_id, n)
);

-- Tags of links as the links.* events told them (clicks and deletions carry
-- no tags): '' is the default domain. Applied by version; a deleted link
-- keeps its last tags (for its deletion's and late clicks' tag filters).
CREATE TABLE IF NOT EXISTS link_tags (
  domain text NOT NULL,
  code text NOT NULL,
  tags text[] NOT NULL,
  version bigint NOT NULL,
  deleted boolean NOT NULL DEFAULT false,
  PRIMARY KEY (domain, code)
);
