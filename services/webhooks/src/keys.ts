// API keys: the KV bucket api_keys, watched, indexed by the SHA-256 of the key.
// When a key was last used goes to the bucket api_key_usage (key: the key's
// name, value: an RFC 3339 UTC time), as every linkflow HTTP service writes it
// (shared/http/keys.py): at most once a minute per key and process, after the
// answer's decision and never delaying it; a failed write is only logged.
import { createHash, timingSafeEqual } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm, type KV } from "@nats-io/kv";
import { apiKey as apiKeySchema } from "./contracts.ts";
import { logger } from "./log.ts";

const log = logger("keys");
export const KEYS_BUCKET = "api_keys";
export const USAGE_BUCKET = "api_key_usage";
export const SCOPE = "webhooks";
/** Last use is written at most this often per key and process (USAGE_EVERY in shared/http/keys.py). */
export const USAGE_EVERY_MS = 60_000;

export interface ApiKey {
  name: string;
  prefix?: string;
  sha256: string;
  scopes: string[];
  created_at?: string | null;
  expires_at?: string | null;
  revoked_at?: string | null;
  /** The only short domains whose links the key sees; absent or empty: every domain. */
  domains?: string[];
}

export function sha256Hex(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

function validRecord(v: unknown): v is ApiKey {
  if (apiKeySchema) return apiKeySchema(v);
  const r = v as ApiKey;
  return (
    typeof r === "object" && r !== null &&
    typeof r.name === "string" &&
    typeof r.sha256 === "string" && /^[0-9a-f]{64}$/.test(r.sha256) &&
    Array.isArray(r.scopes) && r.scopes.every((s) => typeof s === "string") &&
    (r.expires_at == null || typeof r.expires_at === "string") &&
    (r.revoked_at == null || typeof r.revoked_at === "string")
  );
}

export type AuthResult =
  | { ok: true; key: ApiKey }
  | { ok: false; status: 401 | 403; detail: string };

export class KeyRing {
  private byName = new Map<string, ApiKey>();
  private byHash = new Map<string, ApiKey>();
  loaded = false;
  private stopped = false;
  private iter: { stop(): void } | null = null;
  private nc: NatsConnection | null = null;
  private usage: Promise<KV> | null = null; // api_key_usage, bound on the first write
  private used = new Map<string, number>(); // name -> when its use was last written (monotonic ms)

  /** Adds or replaces a record (tests use it directly). */
  put(name: string, value: unknown): void {
    this.remove(name);
    if (!validRecord(value)) {
      log.warn(`ignoring API key record ${JSON.stringify(name)}: it does not match ApiKey`, {});
      return;
    }
    const rec = { ...value, sha256: value.sha256.toLowerCase() };
    this.byName.set(name, rec);
    this.byHash.set(rec.sha256, rec);
  }

  remove(name: string): void {
    const old = this.byName.get(name);
    if (old) {
      this.byName.delete(name);
      if (this.byHash.get(old.sha256) === old) this.byHash.delete(old.sha256);
      this.used.delete(old.name);
    }
  }

  check(authorization: string | undefined, now = new Date()): AuthResult {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    if (!m) return { ok: false, status: 401, detail: "an API key is required: Authorization: Bearer <key>" };
    const hash = sha256Hex(m[1]);
    const rec = this.byHash.get(hash);
    if (!rec || !timingSafeEqual(Buffer.from(rec.sha256, "hex"), Buffer.from(hash, "hex"))) {
      return { ok: false, status: 401, detail: "unknown API key" };
    }
    if (rec.revoked_at && new Date(rec.revoked_at) <= now) return { ok: false, status: 401, detail: "this API key was revoked" };
    if (rec.expires_at && new Date(rec.expires_at) <= now) return { ok: false, status: 401, detail: "this API key has expired" };
    if (!rec.scopes.includes(SCOPE) && !rec.scopes.includes("admin")) {
      return { ok: false, status: 403, detail: `this API key lacks the scope '${SCOPE}'` };
    }
    // An endpoint receives events of every domain it does not filter out:
    // a key that sees some domains only cannot be trusted with one.
    if (rec.domains && rec.domains.length > 0) {
      return { ok: false, status: 403, detail: "a key limited to domains cannot manage webhooks" };
    }
    this.noteUse(rec.name);
    return { ok: true, key: rec };
  }

  /** Starts writing `name`'s last use unless it was written within USAGE_EVERY_MS; never waits for it. */
  private noteUse(name: string): void {
    const nc = this.nc;
    if (!nc) return;
    const at = performance.now();
    const last = this.used.get(name);
    if (last !== undefined && at - last < USAGE_EVERY_MS) return;
    this.used.set(name, at);
    void this.writeUse(nc, name);
  }

  private async writeUse(nc: NatsConnection, name: string): Promise<void> {
    try {
      this.usage ??= new Kvm(nc).open(USAGE_BUCKET);
      await (await this.usage).put(name, new Date().toISOString());
    } catch (e) {
      this.usage = null; // bound again by the next write
      // Last use is informative: never fail a call for it.
      log.warn(`could not note the use of API key ${JSON.stringify(name)}`, { error: e as Error });
    }
  }

  /** Watches the bucket until stop(): initial values, then every change. Retries while it is missing. */
  async watch(nc: NatsConnection): Promise<void> {
    this.nc = nc;
    const kvm = new Kvm(nc);
    while (!this.stopped) {
      try {
        const kv: KV = await kvm.open(KEYS_BUCKET);
        const iter = await kv.watch({ key: ">" });
        this.iter = iter;
        // The watcher first replays the current values; `delta` 0 marks the last of them.
        const status = await kv.status();
        if (status.values === 0) this.markLoaded();
        for await (const e of iter) {
          if (e.operation === "PUT") {
            let v: unknown;
            try {
              v = e.json();
            } catch {
              v = null;
            }
            this.put(e.key, v);
          } else {
            this.remove(e.key);
          }
          if (e.delta === 0) this.markLoaded();
        }
      } catch (e) {
        if (this.stopped) return;
        log.warn(`cannot watch KV bucket ${KEYS_BUCKET} yet; retrying`, { error: e as Error });
      }
      if (!this.stopped) await new Promise((r) => setTimeout(r, 2000));
    }
  }

  private markLoaded(): void {
    if (!this.loaded) {
      this.loaded = true;
      log.info(`API keys loaded (${this.byName.size})`);
    }
  }

  stop(): void {
    this.stopped = true;
    this.iter?.stop();
  }
}
