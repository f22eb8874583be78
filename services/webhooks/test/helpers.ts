// Test helpers: real nats-server and PostgreSQL from LINKFLOW_TEST_NATS_URL /
// LINKFLOW_TEST_DATABASE_URL; the service as a child process.
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { sha256Hex } from "../src/keys.ts";
import { connectNats } from "../src/bus.ts";
import { parseNatsUrl } from "../src/settings.ts";

export const NATS_URL = process.env.LINKFLOW_TEST_NATS_URL;
export const DATABASE_URL = process.env.LINKFLOW_TEST_DATABASE_URL;
export const SKIP = !NATS_URL || !DATABASE_URL
  ? "integration test: set LINKFLOW_TEST_NATS_URL and LINKFLOW_TEST_DATABASE_URL (a nats-server with JetStream, a PostgreSQL superuser URL)"
  : false;

const ROOT = join(import.meta.dirname, "..");

export async function waitFor<T>(fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A fresh database on the test server; its URL. */
export async function freshDatabase(): Promise<string> {
  const name = `webhooks_test_${randomBytes(6).toString("hex")}`;
  const c = new pg.Client({ connectionString: DATABASE_URL });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  const u = new URL(DATABASE_URL!);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Streams (as linkflow migrate makes them) and the KV buckets, when absent. */
export async function topology(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const want: Array<[string, string[]]> = [
    ["LINKS", ["links.created", "links.updated", "links.deleted"]],
    ["CLICKS", ["clicks.>"]],
    ["DLQ", ["dlq.>"]],
  ];
  for (const [name, subjects] of want) {
    try {
      await jsm.streams.info(name);
    } catch {
      await jsm.streams.add({ name, subjects, retention: RetentionPolicy.Limits, storage: StorageType.File, duplicate_window: 120_000_000_000 });
    }
  }
  const kvm = new Kvm(nc);
  for (const b of ["api_keys", "links"]) {
    try {
      await jsm.streams.info(`KV_${b}`);
    } catch {
      await kvm.create(b, { history: 1 });
    }
  }
}

export async function natsConnect(): Promise<NatsConnection> {
  // Credentials in the URL are honoured the service's way (the client ignores them).
  const nc = await connectNats(parseNatsUrl(NATS_URL!, "LINKFLOW_TEST_NATS_URL"), "webhooks-test");
  await topology(nc);
  return nc;
}

/** Puts an API key record; returns the key. */
export async function putKey(nc: NatsConnection, name: string, scopes: string[], extra: Record<string, unknown> = {}): Promise<string> {
  const key = `lf_${randomBytes(24).toString("base64url")}`;
  const kv = await new Kvm(nc).open("api_keys");
  await kv.put(name, JSON.stringify({
    name, prefix: key.slice(0, 8), sha256: sha256Hex(key), scopes,
    created_at: new Date().toISOString(), expires_at: null, revoked_at: null, ...extra,
  }));
  return key;
}

export class Service {
  readonly proc: ChildProcess;
  readonly lines: string[] = [];
  port = 0;
  exited: Promise<number | null>;

  readonly env: Record<string, string>;

  constructor(env: Record<string, string>) {
    this.env = env;
    this.proc = spawn(process.execPath, ["src/main.ts"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", LINKFLOW_WEBHOOKS_PORT: "0", LINKFLOW_LOG_LEVEL: "DEBUG", ...env },
      stdio: ["ignore", "inherit", "pipe"],
    });
    let buf = "";
    this.proc.stderr!.on("data", (c: Buffer) => {
      buf += c.toString();
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.lines.push(line);
        const m = /listening on http:\/\/[^:]+:(\d+)/.exec(line);
        if (m) this.port = Number(m[1]);
        if (process.env.WEBHOOKS_TEST_VERBOSE) process.stderr.write(`[svc] ${line}\n`);
      }
    });
    this.exited = new Promise((resolve) => this.proc.on("exit", (code) => resolve(code)));
  }

  static async start(env: Record<string, string>, ready = true): Promise<Service> {
    const s = new Service(env);
    await waitFor(() => s.port > 0 || s.proc.exitCode !== null, 20_000, "the service to listen");
    if (s.proc.exitCode !== null) throw new Error(`service exited ${s.proc.exitCode}:\n${s.lines.join("\n")}`);
    if (ready) await waitFor(() => s.lines.some((l) => l.includes("ready: taking events")), 20_000, "the service to be ready");
    return s;
  }

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  logs(): string {
    return this.lines.join("\n");
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.proc.exitCode === null) this.proc.kill(signal);
    return this.exited;
  }
}

export function serviceEnv(databaseUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    // LINKFLOW_TEST_WEBHOOKS_NATS_URL: the service connects as a least-privilege user of its own.
    LINKFLOW_NATS_URL: process.env.LINKFLOW_TEST_WEBHOOKS_NATS_URL || NATS_URL!,
    LINKFLOW_WEBHOOKS_DATABASE_URL: databaseUrl,
    LINKFLOW_WEBHOOKS_ALLOW_HTTP: "true",
    LINKFLOW_WEBHOOKS_ALLOW_PRIVATE: "true",
    LINKFLOW_WEBHOOKS_RETRY_SCALE: "0.00002",
    ...extra,
  };
}

export interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  at: number;
}

/** A local receiver; `respond` decides each answer (status, or "hang"). */
export class Receiver {
  readonly got: Received[] = [];
  server: http.Server;
  respond: (n: number, r: Received) => number | "hang" = () => 200;
  private hanging: http.ServerResponse[] = [];

  constructor() {
    this.server = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const r = { headers: req.headers, body, at: Date.now() };
        this.got.push(r);
        const a = this.respond(this.got.length, r);
        if (a === "hang") this.hanging.push(res);
        else res.writeHead(a, a >= 300 && a < 400 ? { location: "http://127.0.0.1:1/" } : {}).end("ok");
      });
    });
  }

  async listen(): Promise<Receiver> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}/hook`;
  }

  async close(): Promise<void> {
    for (const h of this.hanging) h.destroy();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

export async function api(base: string, key: string | null, method: string, path: string, body?: unknown): Promise<{ status: number; headers: Headers; json: any }> {
  const headers: Record<string, string> = {};
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) });
  const text = await r.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: r.status, headers: r.headers, json };
}

let seq = 0;
/** Publishes an event as the gateway would (Nats-Msg-Id, X-Request-Id, Linkflow-Enqueued-At). */
export async function publish(nc: NatsConnection, subject: string, payload: unknown, requestId?: string): Promise<string> {
  const { jetstream } = await import("@nats-io/jetstream");
  const { headers } = await import("@nats-io/transport-node");
  const h = headers();
  const id = `t${Date.now()}.${process.pid}.${++seq}.${randomBytes(4).toString("hex")}`;
  h.set("X-Request-Id", requestId ?? id);
  h.set("Linkflow-Enqueued-At", new Date().toISOString());
  await jetstream(nc).publish(subject, typeof payload === "string" ? payload : JSON.stringify(payload), { msgID: id, headers: h });
  return id;
}

export const now = () => new Date().toISOString();
export const linkUpdated = (code: string, extra: Record<string, unknown> = {}) => ({
  code, url: `https://example.com/${code}`, redirect_type: 302, expires_at: null, tags: [], version: 2, updated_at: now(), ...extra,
});
export const click = (code: string) => ({ id: randomBytes(12).toString("hex"), code, ts: now(), is_bot: false });
