// Settings: read once from the environment into one typed object.
// A bad value throws SettingsError; main prints one line and exits 2.

export class SettingsError extends Error {}

export type LogLevel = "DEBUG" | "INFO" | "WARNING" | "ERROR";

export interface NatsSettings {
  servers: string[]; // without credentials
  user?: string;
  pass?: string;
  token?: string;
  tls: boolean;
  creds?: string; // path of a .creds file
}

export interface Settings {
  host: string;
  port: number;
  nats: NatsSettings;
  databaseUrl: string;
  allowHttp: boolean;
  allowPrivate: boolean;
  authOff: boolean;
  /** Origins the web app is served from (LINKFLOW_APP_URL): the only ones CORS allows for /api/*. */
  appOrigins: string[];
  logLevel: LogLevel;
  /** Test-only: multiplies every retry delay (1 in production). */
  retryScale: number;
  /** Host of LINKFLOW_PUBLIC_URL: the name of the default domain in `domains` filters. */
  defaultDomain: string;
  bulkLimit: number;
  perEndpointConcurrency: number;
  globalConcurrency: number;
  maxEndpoints: number;
  authFailureRate: number;
  authFailureBurst: number;
  writeRate: number;
  /** Milliseconds the intake and the deliverer may fall behind while a gateway says
   *  redirects.busy (src/busy.ts); 0 never holds off. */
  yieldLagMs: number;
}

type Env = Record<string, string | undefined>;

function bool(env: Env, name: string, dflt: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return dflt;
  const v = raw.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(v)) return true;
  if (["0", "false", "no", "off"].includes(v)) return false;
  throw new SettingsError(`${name}=${raw}: expected true or false`);
}

function int(env: Env, name: string, dflt: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return dflt;
  if (!/^\d+$/.test(raw.trim())) throw new SettingsError(`${name}=${raw}: expected an integer`);
  const n = Number(raw.trim());
  if (n < min || n > max) throw new SettingsError(`${name}=${raw}: expected ${min} to ${max}`);
  return n;
}

function num(env: Env, name: string, dflt: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return dflt;
  const n = Number(raw.trim());
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new SettingsError(`${name}=${raw}: expected a number from ${min} to ${max}`);
  }
  return n;
}

function rate(env: Env, name: string, dflt: number): number {
  // "50", "50/s" and "50/second" all mean 50 per second.
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return dflt;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:\/\s*(?:s|sec|second))?\s*$/.exec(raw);
  if (!m || Number(m[1]) <= 0) throw new SettingsError(`${name}=${raw}: expected a rate such as 50/s`);
  return Number(m[1]);
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds in "250ms", "5s", "2m", "24h", "7d" or bare seconds ("1.5"), as the Python services read durations. */
function duration(env: Env, name: string, dfltMs: number, maxMs: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return dfltMs;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(raw);
  if (!m) throw new SettingsError(`${name}=${raw}: not a duration (use e.g. 500ms, 1s, 5m, 24h, 7d)`);
  const ms = Number(m[1]) * UNIT_MS[m[2] ?? "s"];
  if (ms > maxMs) throw new SettingsError(`${name}=${raw}: at most ${maxMs / 1000} s`);
  return ms;
}

export function parseNatsUrl(raw: string, name: string): NatsSettings {
  const servers: string[] = [];
  let user: string | undefined;
  let pass: string | undefined;
  let token: string | undefined;
  let tls = false;
  for (const part of raw.split(",").map((s) => s.trim()).filter(Boolean)) {
    const withScheme = /^[a-z]+:\/\//i.test(part) ? part : `nats://${part}`;
    let u: URL;
    try {
      u = new URL(withScheme);
    } catch {
      throw new SettingsError(`${name}: ${JSON.stringify(part)} is not a NATS URL`);
    }
    const scheme = u.protocol.replace(/:$/, "").toLowerCase();
    if (!["nats", "tls"].includes(scheme)) {
      throw new SettingsError(`${name}: scheme ${scheme}:// is not supported (nats:// or tls://)`);
    }
    if (!u.hostname) throw new SettingsError(`${name}: ${JSON.stringify(part)} has no host`);
    if (scheme === "tls") tls = true;
    if (u.username) {
      const un = decodeURIComponent(u.username);
      if (u.password) {
        user = un;
        pass = decodeURIComponent(u.password);
      } else {
        token = un;
      }
    }
    servers.push(`${u.hostname.includes(":") && !u.hostname.startsWith("[") ? `[${u.hostname}]` : u.hostname}:${u.port || "4222"}`);
  }
  if (servers.length === 0) throw new SettingsError(`${name}: no server given`);
  return { servers, user, pass, token, tls };
}

const LOOPBACK = ["127.0.0.1", "localhost"];

/**
 * What a browser sends as `Origin` from a page at one of `raw`'s URLs
 * (comma-separated), as the gateway reads LINKFLOW_APP_URL (shared/urls.py):
 * `scheme://host[:port]` in lower case, no port when it is the scheme's own,
 * and both spellings of this machine's loopback address.
 */
export function appOrigins(raw: string, name: string): string[] {
  const out: string[] = [];
  for (const part of raw.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean)) {
    let u: URL;
    try {
      u = new URL(part);
    } catch {
      throw new SettingsError(`${name}: ${JSON.stringify(part)} is not a URL`);
    }
    if (!["http:", "https:"].includes(u.protocol) || !u.hostname) {
      throw new SettingsError(`${name}: ${JSON.stringify(part)} is not an http(s) URL`);
    }
    const suffix = u.port ? `:${u.port}` : ""; // URL() leaves out the scheme's own port
    const hosts = LOOPBACK.includes(u.hostname) ? LOOPBACK : [u.hostname];
    for (const host of hosts) out.push(`${u.protocol}//${host}${suffix}`);
  }
  if (out.length === 0) throw new SettingsError(`${name}: no URL given`);
  return [...new Set(out)];
}

/** Without LINKFLOW_WEBHOOKS_DATABASE_URL: `<database>_webhooks` on the main database's server. */
export function ownDatabase(main: string): string {
  // By hand: libpq URLs may have an empty host (a Unix socket), which URL() refuses.
  const m = /^(postgres(?:ql)?:\/\/[^/?#]*)(\/[^?#]*)?(.*)$/.exec(main);
  if (!m) throw new SettingsError("LINKFLOW_DATABASE_URL: expected a postgresql:// URL");
  const name = decodeURIComponent((m[2] ?? "").replace(/^\//, "")) || "postgres";
  return `${m[1]}/${encodeURIComponent(`${name}_webhooks`)}${m[3]}`;
}

const LEVELS: Record<string, LogLevel> = {
  debug: "DEBUG",
  info: "INFO",
  warning: "WARNING",
  warn: "WARNING",
  error: "ERROR",
  critical: "ERROR",
};

export function loadSettings(env: Env = process.env): Settings {
  const natsName = env.LINKFLOW_WEBHOOKS_NATS_URL ? "LINKFLOW_WEBHOOKS_NATS_URL" : "LINKFLOW_NATS_URL";
  const nats = parseNatsUrl(env[natsName] || "nats://127.0.0.1:4222", natsName);
  const creds = env.LINKFLOW_WEBHOOKS_NATS_CREDS || env.LINKFLOW_NATS_CREDS;
  if (creds) nats.creds = creds;

  const databaseUrl = env.LINKFLOW_WEBHOOKS_DATABASE_URL || ownDatabase(env.LINKFLOW_DATABASE_URL || "postgresql://postgres@127.0.0.1:5432/linkflow");
  if (!/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new SettingsError("LINKFLOW_WEBHOOKS_DATABASE_URL: expected a postgresql:// URL");
  }

  const level = LEVELS[(env.LINKFLOW_LOG_LEVEL || "info").trim().toLowerCase()];
  if (!level) throw new SettingsError(`LINKFLOW_LOG_LEVEL=${env.LINKFLOW_LOG_LEVEL}: expected DEBUG, INFO, WARNING or ERROR`);

  const authRaw = (env.LINKFLOW_AUTH || "on").trim().toLowerCase();
  if (!["on", "off", "true", "false", "1", "0", ""].includes(authRaw)) {
    throw new SettingsError(`LINKFLOW_AUTH=${env.LINKFLOW_AUTH}: expected on or off`);
  }

  let defaultDomain = "127.0.0.1";
  const publicUrl = env.LINKFLOW_PUBLIC_URL || "http://127.0.0.1:8080";
  try {
    defaultDomain = new URL(publicUrl).hostname.toLowerCase();
  } catch {
    throw new SettingsError(`LINKFLOW_PUBLIC_URL=${publicUrl}: not a URL`);
  }

  const host = (env.LINKFLOW_WEBHOOKS_HOST || "127.0.0.1").trim();
  return {
    host,
    port: int(env, "LINKFLOW_WEBHOOKS_PORT", 8085, 0, 65535),
    nats,
    databaseUrl,
    allowHttp: bool(env, "LINKFLOW_WEBHOOKS_ALLOW_HTTP", false),
    allowPrivate: bool(env, "LINKFLOW_WEBHOOKS_ALLOW_PRIVATE", false),
    authOff: authRaw === "off" || authRaw === "false" || authRaw === "0",
    appOrigins: appOrigins(env.LINKFLOW_APP_URL || "http://127.0.0.1:8081", "LINKFLOW_APP_URL"),
    logLevel: level,
    retryScale: num(env, "LINKFLOW_WEBHOOKS_RETRY_SCALE", 1, 0, 1000),
    defaultDomain,
    bulkLimit: int(env, "LINKFLOW_WEBHOOKS_BULK_LIMIT", 500, 1, 10_000),
    perEndpointConcurrency: int(env, "LINKFLOW_WEBHOOKS_ENDPOINT_CONCURRENCY", 4, 1, 100),
    globalConcurrency: int(env, "LINKFLOW_WEBHOOKS_CONCURRENCY", 64, 1, 10_000),
    maxEndpoints: int(env, "LINKFLOW_WEBHOOKS_MAX_ENDPOINTS", 1000, 1, 1_000_000),
    authFailureRate: rate(env, "LINKFLOW_AUTH_FAILURE_RATE", 10),
    authFailureBurst: 50,
    writeRate: rate(env, "LINKFLOW_WEBHOOKS_WRITE_RATE", rate(env, "LINKFLOW_LINK_WRITE_RATE", 50)),
    // Below the clicks consumer's ack wait (30 s): a batch held in hand is not redelivered meanwhile.
    yieldLagMs: duration(env, "LINKFLOW_WEBHOOKS_YIELD_LAG", 20_000, 25_000),
  };
}
