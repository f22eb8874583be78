// PostgreSQL: endpoints, deliveries, attempts. Every query lives here.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { newId, newSecret } from "./ids.ts";

const SCHEMA = readFileSync(join(import.meta.dirname, "schema.sql"), "utf8");
const SCHEMA_LOCK = 0x6c66_7768; // "lfwh"
const CLICKS_LOCK = 0x6c66_7763; // serialises the clicks consumer's reconcile
const ENDPOINTS_LOCK = 0x6c66_7765; // serialises creations against the endpoint cap

export interface EndpointRow {
  id: string;
  url: string;
  events: string[];
  codes: string[];
  tags: string[];
  domains: string[];
  description: string;
  enabled: boolean;
  disabled_reason: string | null;
  created_at: Date;
  updated_at: Date;
}

/** An endpoint as the API shows it: its row, times as RFC 3339 strings. */
export type Endpoint = Omit<EndpointRow, "created_at" | "updated_at"> & { created_at: string; updated_at: string };

export function endpointJson(r: EndpointRow): Endpoint {
  return { ...r, created_at: r.created_at.toISOString(), updated_at: r.updated_at.toISOString() };
}

const EP_COLS = "id, url, events, codes, tags, domains, description, enabled, disabled_reason, created_at, updated_at";

export interface NewEndpoint {
  url: string;
  events: string[];
  codes: string[];
  tags: string[];
  domains: string[];
  description: string;
}

export type EndpointPatch = Partial<NewEndpoint & { enabled: boolean }>;

export interface NewDelivery {
  endpointId: string;
  eventId: string;
  eventType: string;
  body: string;
  requestId: string | null;
}

export interface Claimed {
  id: string;
  endpoint_id: string;
  event_type: string;
  body: string;
  attempts: number;
  request_id: string | null;
  url: string;
  secret: string;
  previous_secret: string | null;
  previous_secret_until: Date | null;
  created_at: Date;
}

export interface AttemptResult {
  deliveryId: string;
  endpointId: string;
  n: number; // this attempt's number (1-based)
  at: Date;
  durationMs: number;
  statusCode: number | null;
  error: string | null;
  ok: boolean;
  status: "pending" | "delivered" | "failed";
  nextAttemptAt: Date | null;
}

export interface DeliveryItem {
  id: string;
  event_type: string;
  status: string;
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  next_attempt_at: string | null;
  created_at: string;
}

export interface Attempt {
  n: number;
  at: string;
  duration_ms: number;
  status_code: number | null;
  error: string | null;
}

export const DISABLE_AFTER = 100;

const DELIVERY_COLS = "id, event_type, status, attempts, last_status_code, last_error, next_attempt_at, created_at";

type DeliveryRow = Omit<DeliveryItem, "next_attempt_at" | "created_at"> & { next_attempt_at: Date | null; created_at: Date };

/** A delivery as the API shows it (a next attempt only while pending). */
function deliveryJson(d: DeliveryRow): DeliveryItem {
  return {
    id: d.id,
    event_type: d.event_type,
    status: d.status,
    attempts: d.attempts,
    last_status_code: d.last_status_code,
    last_error: d.last_error,
    next_attempt_at: d.status === "pending" && d.next_attempt_at ? d.next_attempt_at.toISOString() : null,
    created_at: d.created_at.toISOString(),
  };
}

export class Store {
  readonly pool: pg.Pool;

  constructor(url: string, max = 10) {
    this.pool = new pg.Pool({ connectionString: url, max, connectionTimeoutMillis: 5000, idleTimeoutMillis: 30_000 });
    this.pool.on("error", () => {
      /* an idle client lost its connection: the next query reconnects */
    });
    // A client whose connection dies while checked out (between two queries of a
    // transaction) emits "error": without a listener that would end the process.
    // Its next query fails instead, and it is thrown away on release.
    this.pool.on("connect", (client) => {
      client.on("error", () => undefined);
    });
  }

  async migrate(): Promise<void> {
    const c = await this.pool.connect();
    try {
      await c.query("SELECT pg_advisory_lock($1)", [SCHEMA_LOCK]);
      try {
        await c.query(SCHEMA);
      } finally {
        await c.query("SELECT pg_advisory_unlock($1)", [SCHEMA_LOCK]);
      }
    } finally {
      c.release();
    }
  }

  async ping(): Promise<void> {
    await this.pool.query("SELECT 1");
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  /** A transaction, run again (up to 3 times) when PostgreSQL chose it as a deadlock victim. */
  async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    for (let i = 1; ; i++) {
      try {
        return await this.txOnce(fn);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (i >= 3 || (code !== "40P01" && code !== "40001")) throw e;
      }
    }
  }

  private async txOnce<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await c.query("BEGIN");
      const out = await fn(c);
      await c.query("COMMIT");
      return out;
    } catch (e) {
      await c.query("ROLLBACK").catch((r: Error) => {
        broken = r; // the connection is gone: do not give it back to the pool
      });
      throw e;
    } finally {
      c.release(broken);
    }
  }

  // ---- endpoints ----

  /** A new endpoint and its secret; null when `max` exist already. Counted
   *  and inserted under one lock: creations at once (from any replica)
   *  cannot pass the cap together. */
  async createEndpoint(e: NewEndpoint, max: number): Promise<{ endpoint: Endpoint; secret: string } | null> {
    const id = newId("ep");
    const secret = newSecret();
    return this.tx(async (c) => {
      await c.query("SELECT pg_advisory_xact_lock($1)", [ENDPOINTS_LOCK]);
      const held = await c.query("SELECT count(*)::int AS n FROM endpoints");
      if (held.rows[0].n >= max) return null;
      const r = await c.query(
        `INSERT INTO endpoints (id, url, events, codes, tags, domains, description, secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ${EP_COLS}`,
        [id, e.url, e.events, e.codes, e.tags, e.domains, e.description, secret],
      );
      return { endpoint: endpointJson(r.rows[0]), secret };
    });
  }

  async listEndpoints(): Promise<Endpoint[]> {
    const r = await this.pool.query(`SELECT ${EP_COLS} FROM endpoints ORDER BY created_at, id`);
    return r.rows.map(endpointJson);
  }

  async getEndpoint(id: string): Promise<Endpoint | null> {
    const r = await this.pool.query(`SELECT ${EP_COLS} FROM endpoints WHERE id = $1`, [id]);
    return r.rows[0] ? endpointJson(r.rows[0]) : null;
  }

  async patchEndpoint(id: string, p: EndpointPatch): Promise<Endpoint | null> {
    const sets: string[] = [];
    const args: unknown[] = [id];
    for (const k of ["url", "events", "codes", "tags", "domains", "description"] as const) {
      if (p[k] !== undefined) {
        args.push(p[k]);
        sets.push(`${k} = $${args.length}`);
      }
    }
    if (p.enabled !== undefined) {
      args.push(p.enabled);
      sets.push(`enabled = $${args.length}`);
      if (p.enabled) {
        // Re-enabling clears why it was disabled and its failure count.
        sets.push("disabled_reason = CASE WHEN enabled THEN disabled_reason ELSE NULL END");
        sets.push("consecutive_failures = CASE WHEN enabled THEN consecutive_failures ELSE 0 END");
      } else {
        sets.push("disabled_reason = CASE WHEN enabled THEN 'disabled by API' ELSE disabled_reason END");
      }
    }
    sets.push("updated_at = now()");
    const r = await this.pool.query(`UPDATE endpoints SET ${sets.join(", ")} WHERE id = $1 RETURNING ${EP_COLS}`, args);
    return r.rows[0] ? endpointJson(r.rows[0]) : null;
  }

  async deleteEndpoint(id: string): Promise<boolean> {
    const r = await this.tx((c) => c.query("DELETE FROM endpoints WHERE id = $1", [id]));
    return (r.rowCount ?? 0) > 0;
  }

  /** A new secret; the old one keeps signing beside it for `overlapMs`. */
  async rotateSecret(id: string, overlapMs: number): Promise<string | null> {
    const secret = newSecret();
    const r = await this.pool.query(
      `UPDATE endpoints SET previous_secret = secret, previous_secret_until = now() + make_interval(secs => $3),
         secret = $2, updated_at = now() WHERE id = $1`,
      [id, secret, overlapMs / 1000],
    );
    return (r.rowCount ?? 0) > 0 ? secret : null;
  }

  /** Enabled endpoints, for matching events against (read inside the intake's transaction). */
  async enabledEndpoints(c: pg.ClientBase): Promise<EndpointRow[]> {
    const r = await c.query(`SELECT ${EP_COLS} FROM endpoints WHERE enabled`);
    return r.rows;
  }

  async anyEndpointWants(event: string, c: pg.ClientBase | pg.Pool = this.pool): Promise<boolean> {
    const r = await c.query("SELECT EXISTS (SELECT 1 FROM endpoints WHERE enabled AND $1 = ANY(events)) AS x", [event]);
    return r.rows[0].x;
  }

  async anyEndpointFiltersTags(c: pg.ClientBase): Promise<boolean> {
    const r = await c.query("SELECT EXISTS (SELECT 1 FROM endpoints WHERE enabled AND cardinality(tags) > 0) AS x");
    return r.rows[0].x;
  }

  /** Runs `fn` holding the cluster-wide lock of the clicks consumer's reconcile. */
  async withClicksLock<T>(fn: (c: pg.ClientBase) => Promise<T>): Promise<T> {
    return this.tx(async (c) => {
      await c.query("SELECT pg_advisory_xact_lock($1)", [CLICKS_LOCK]);
      return fn(c);
    });
  }

  // ---- link tags (for tag filters on clicks) ----

  async applyLinkTags(
    c: pg.ClientBase,
    rows: Array<{ domain: string; code: string; tags: string[]; version: number; deleted: boolean; created: boolean }>,
  ): Promise<void> {
    for (const r of rows) {
      if (r.created) {
        await c.query(
          `INSERT INTO link_tags (domain, code, tags, version, deleted) VALUES ($1, $2, $3, $4, false)
           ON CONFLICT (domain, code) DO UPDATE SET tags = excluded.tags, deleted = false,
             version = GREATEST(link_tags.version, excluded.version)
           WHERE link_tags.deleted OR link_tags.version <= excluded.version`,
          [r.domain, r.code, r.tags, r.version],
        );
      } else {
        await c.query(
          `INSERT INTO link_tags (domain, code, tags, version, deleted) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (domain, code) DO UPDATE SET
             tags = CASE WHEN excluded.deleted THEN link_tags.tags ELSE excluded.tags END,
             version = excluded.version, deleted = excluded.deleted
           WHERE link_tags.version < excluded.version`,
          [r.domain, r.code, r.tags, r.version, r.deleted],
        );
      }
    }
  }

  async linkTags(c: pg.ClientBase, keys: Array<{ domain: string; code: string }>): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    if (keys.length === 0) return out;
    const r = await c.query(
      `SELECT domain, code, tags FROM link_tags
       WHERE (domain, code) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [keys.map((k) => k.domain), keys.map((k) => k.code)],
    );
    for (const row of r.rows) out.set(`${row.domain}\u0000${row.code}`, row.tags);
    return out;
  }

  // ---- deliveries ----

  async insertDeliveries(c: pg.ClientBase, ds: NewDelivery[]): Promise<number> {
    if (ds.length === 0) return 0;
    const r = await c.query(
      `INSERT INTO deliveries (id, endpoint_id, event_id, event_type, body, request_id, next_attempt_at)
       SELECT id, endpoint_id, event_id, event_type, body, request_id, now()
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
         AS t(id, endpoint_id, event_id, event_type, body, request_id)
       ON CONFLICT (endpoint_id, event_id) DO NOTHING`,
      [
        ds.map(() => newId("msg")),
        ds.map((d) => d.endpointId),
        ds.map((d) => d.eventId),
        ds.map((d) => d.eventType),
        ds.map((d) => d.body),
        ds.map((d) => d.requestId),
      ],
    );
    return r.rowCount ?? 0;
  }

  /**
   * Claims due deliveries of enabled endpoints: at most `asks.get(ep)` (else
   * `otherwise`) per endpoint and `limit` in all, leased for `leaseMs`.
   */
  async claim(asks: Map<string, number>, otherwise: number, limit: number, leaseMs: number): Promise<Claimed[]> {
    const ids = [...asks.keys()];
    const free = ids.map((k) => Math.max(0, asks.get(k) ?? 0));
    const perEndpoint = Math.max(0, otherwise);
    const r = await this.pool.query(
      `WITH slots AS (SELECT * FROM unnest($1::text[], $2::int[]) AS s(endpoint_id, free)),
       picked AS (
         SELECT c.id FROM endpoints e
         LEFT JOIN slots s ON s.endpoint_id = e.id
         CROSS JOIN LATERAL (
           SELECT d.id FROM deliveries d
           WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= now()
             AND (d.lease_until IS NULL OR d.lease_until < now())
           ORDER BY d.next_attempt_at
           LIMIT COALESCE(s.free, $3)
           FOR UPDATE SKIP LOCKED) c
         WHERE e.enabled AND COALESCE(s.free, $3) > 0
         LIMIT $4)
       UPDATE deliveries d SET lease_until = now() + make_interval(secs => $5)
       FROM picked, endpoints e
       WHERE d.id = picked.id AND e.id = d.endpoint_id
       RETURNING d.id, d.endpoint_id, d.event_type, d.body, d.attempts, d.request_id, d.created_at,
                 e.url, e.secret, e.previous_secret, e.previous_secret_until`,
      [ids, free, perEndpoint, limit, leaseMs / 1000],
    );
    return r.rows;
  }

  /** Gives claimed deliveries back (shutdown before they were attempted). */
  async release(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.pool.query("UPDATE deliveries SET lease_until = NULL WHERE id = ANY($1) AND status = 'pending'", [ids]);
  }

  /** Writes attempts' results back in one transaction; disables endpoints
   *  whose last DISABLE_AFTER attempts all failed. Returns disabled endpoint ids. */
  async recordResults(results: AttemptResult[]): Promise<string[]> {
    if (results.length === 0) return [];
    return this.tx(async (c) => {
      // Deliveries first (their rows locked: a concurrent delete waits), then the attempts of those still there.
      await c.query(
        `UPDATE deliveries d SET status = r.status, attempts = GREATEST(d.attempts, r.n),
           last_status_code = r.code, last_error = r.err, next_attempt_at = r.next, lease_until = NULL
         FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], $6::timestamptz[])
           AS r(id, status, n, code, err, next)
         WHERE d.id = r.id AND d.status = 'pending'`,
        [
          results.map((r) => r.deliveryId),
          results.map((r) => r.status),
          results.map((r) => r.n),
          results.map((r) => r.statusCode),
          results.map((r) => r.error),
          results.map((r) => r.nextAttemptAt),
        ],
      );
      await c.query(
        `INSERT INTO attempts (delivery_id, n, at, duration_ms, status_code, error)
         SELECT t.* FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::text[])
           AS t(delivery_id, n, at, duration_ms, status_code, error)
         JOIN deliveries d ON d.id = t.delivery_id
         ON CONFLICT DO NOTHING`,
        [
          results.map((r) => r.deliveryId),
          results.map((r) => r.n),
          results.map((r) => r.at),
          results.map((r) => Math.round(r.durationMs)),
          results.map((r) => r.statusCode),
          results.map((r) => r.error),
        ],
      );
      // Per endpoint: did any succeed, and how many failed after the last success.
      const per = new Map<string, { reset: boolean; failures: number }>();
      for (const r of results) {
        const e = per.get(r.endpointId) ?? { reset: false, failures: 0 };
        if (r.ok) {
          e.reset = true;
          e.failures = 0;
        } else {
          e.failures += 1;
        }
        per.set(r.endpointId, e);
      }
      const ids = [...per.keys()];
      const u = await c.query(
        `UPDATE endpoints e SET
           consecutive_failures = CASE WHEN r.reset THEN r.failures ELSE e.consecutive_failures + r.failures END,
           enabled = e.enabled AND (CASE WHEN r.reset THEN r.failures ELSE e.consecutive_failures + r.failures END) < $4,
           disabled_reason = CASE
             WHEN e.enabled AND (CASE WHEN r.reset THEN r.failures ELSE e.consecutive_failures + r.failures END) >= $4
             THEN 'the last ' || $4 || ' delivery attempts all failed' ELSE e.disabled_reason END,
           updated_at = CASE
             WHEN e.enabled AND (CASE WHEN r.reset THEN r.failures ELSE e.consecutive_failures + r.failures END) >= $4
             THEN now() ELSE e.updated_at END
         FROM unnest($1::text[], $2::bool[], $3::int[]) AS r(id, reset, failures)
         WHERE e.id = r.id
         RETURNING e.id, e.enabled, e.disabled_reason`,
        [ids, ids.map((k) => per.get(k)!.reset), ids.map((k) => per.get(k)!.failures), DISABLE_AFTER],
      );
      return u.rows.filter((row) => !row.enabled && String(row.disabled_reason ?? "").startsWith("the last")).map((row) => row.id);
    });
  }

  async createTestDelivery(endpointId: string, eventId: string, body: string, requestId: string | null): Promise<string> {
    const id = newId("msg");
    await this.pool.query(
      `INSERT INTO deliveries (id, endpoint_id, event_id, event_type, body, request_id, next_attempt_at)
       VALUES ($1, $2, $3, 'webhook.test', $4, $5, now())`,
      [id, endpointId, eventId, body, requestId],
    );
    return id;
  }

  async listDeliveries(
    endpointId: string,
    status: string | null,
    limit: number,
    after: { us: bigint; id: string } | null,
  ): Promise<{ items: DeliveryItem[]; next: { us: bigint; id: string } | null }> {
    const args: unknown[] = [endpointId, limit + 1];
    let where = "endpoint_id = $1";
    if (status) {
      args.push(status);
      where += ` AND status = $${args.length}`;
    }
    if (after) {
      args.push(after.us.toString(), after.id);
      where += ` AND (created_at, id) < (to_timestamp(0) + make_interval(secs => $${args.length - 1}::numeric / 1000000), $${args.length})`;
    }
    const r = await this.pool.query(
      `SELECT ${DELIVERY_COLS}, ((extract(epoch FROM created_at) * 1000000)::bigint)::text AS us
       FROM deliveries WHERE ${where} ORDER BY created_at DESC, id DESC LIMIT $2`,
      args,
    );
    const rows = r.rows.slice(0, limit);
    const more = r.rows.length > limit;
    const last = rows[rows.length - 1];
    return {
      items: rows.map(deliveryJson),
      next: more && last ? { us: BigInt(last.us), id: last.id } : null,
    };
  }

  async getDelivery(endpointId: string, id: string): Promise<(DeliveryItem & { attempts_list: Attempt[] }) | null> {
    const r = await this.pool.query(
      `SELECT ${DELIVERY_COLS} FROM deliveries WHERE endpoint_id = $1 AND id = $2`,
      [endpointId, id],
    );
    const d = r.rows[0];
    if (!d) return null;
    const a = await this.pool.query(
      "SELECT n, at, duration_ms, status_code, error FROM attempts WHERE delivery_id = $1 ORDER BY n",
      [id],
    );
    return {
      ...deliveryJson(d),
      attempts_list: a.rows.map((x) => ({ n: x.n, at: x.at.toISOString(), duration_ms: x.duration_ms, status_code: x.status_code, error: x.error })),
    };
  }

  /** Pending again, next attempt now. False when no such delivery. */
  async retryDelivery(endpointId: string, id: string): Promise<boolean> {
    const r = await this.pool.query(
      `UPDATE deliveries SET status = 'pending', next_attempt_at = now(), lease_until = NULL
       WHERE endpoint_id = $1 AND id = $2`,
      [endpointId, id],
    );
    return (r.rowCount ?? 0) > 0;
  }

  /** Deletes deliveries older than `days`, in chunks. */
  async sweep(days: number): Promise<number> {
    let total = 0;
    for (;;) {
      const r = await this.pool.query(
        `DELETE FROM deliveries WHERE id IN (
           SELECT id FROM deliveries WHERE created_at < now() - make_interval(days => $1) LIMIT 5000)`,
        [days],
      );
      total += r.rowCount ?? 0;
      if ((r.rowCount ?? 0) < 5000) return total;
    }
  }

  async pendingStats(): Promise<{ perEndpoint: Array<{ endpoint_id: string; n: number }>; oldestSeconds: number }> {
    // Every enabled endpoint, 0 included: a gauge that is absent while
    // nothing waits reads as "no data" in Prometheus, not as 0.
    const r = await this.pool.query(
      `SELECT e.id AS endpoint_id, count(d.id)::int AS n,
              extract(epoch FROM now() - min(d.created_at))::float8 AS oldest
       FROM endpoints e LEFT JOIN deliveries d ON d.endpoint_id = e.id AND d.status = 'pending'
       WHERE e.enabled OR d.id IS NOT NULL
       GROUP BY e.id`,
    );
    return {
      perEndpoint: r.rows.map((x) => ({ endpoint_id: x.endpoint_id, n: x.n })),
      oldestSeconds: r.rows.reduce((m, x) => Math.max(m, x.oldest ?? 0), 0),
    };
  }
}
