// Pure parts: no servers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import { MAX_ATTEMPTS, SCHEDULE_SECONDS, retryDelayMs } from "../src/backoff.ts";
import { matches } from "../src/filters.ts";
import { refusedReason, urlProblem } from "../src/address.ts";
import { decodeCursor, encodeCursor } from "../src/api.ts";
import { SettingsError, loadSettings, parseNatsUrl } from "../src/settings.ts";
import http from "node:http";
import { getEventListeners } from "node:events";
import { Sender, sign, guardedLookup } from "../src/deliver.ts";
import { buildBody, parse } from "../src/intake.ts";
import { factsOf } from "../src/contracts.ts";
import { KeyRing, sha256Hex } from "../src/keys.ts";
import { RateLimiter } from "../src/ratelimit.ts";
import { newSecret } from "../src/ids.ts";

test("backoff: 8 attempts over more than 24 h, first retry within 10 s", () => {
  assert.equal(MAX_ATTEMPTS, 8);
  const mid = () => 0.5; // no jitter
  assert.ok(retryDelayMs(1, 1, mid)! <= 10_000);
  assert.equal(retryDelayMs(1, 1, mid), 5000);
  assert.equal(retryDelayMs(2, 1, mid), 300_000);
  let total = 0;
  for (let n = 1; n < MAX_ATTEMPTS; n++) total += retryDelayMs(n, 1, mid)!;
  assert.ok(total > 24 * 3600 * 1000, `schedule spans ${total} ms`);
  assert.equal(retryDelayMs(MAX_ATTEMPTS, 1, mid), null);
  assert.equal(retryDelayMs(0), null);
  // Jitter stays within 10 %, and scale shrinks it.
  for (const r of [0, 0.999]) {
    const d = retryDelayMs(3, 1, () => r)!;
    assert.ok(Math.abs(d - SCHEDULE_SECONDS[2] * 1000) <= SCHEDULE_SECONDS[2] * 100);
  }
  assert.equal(retryDelayMs(1, 0.001, mid), 5);
});

test("filters: events, codes, domains, tags", () => {
  const f = { events: ["link.clicked"], codes: [], tags: [], domains: [] };
  const facts = { code: "sale", domain: null, tags: null };
  assert.ok(matches(f, "link.clicked", facts, null, "go.example"));
  assert.ok(!matches(f, "link.updated", facts, null, "go.example"));
  assert.ok(matches({ ...f, codes: ["sale"] }, "link.clicked", facts, null, "x"));
  assert.ok(!matches({ ...f, codes: ["other"] }, "link.clicked", facts, null, "x"));
  // The default domain (null in payloads) is named by LINKFLOW_PUBLIC_URL's host.
  assert.ok(matches({ ...f, domains: ["go.example"] }, "link.clicked", facts, null, "go.example"));
  assert.ok(!matches({ ...f, domains: ["links.example"] }, "link.clicked", facts, null, "go.example"));
  assert.ok(matches({ ...f, domains: ["links.example"] }, "link.clicked", { ...facts, domain: "links.example" }, null, "go.example"));
  // Tags: any of them; unknown tags never match a tag filter.
  assert.ok(matches({ ...f, tags: ["a", "b"] }, "link.clicked", facts, ["b"], "x"));
  assert.ok(!matches({ ...f, tags: ["a"] }, "link.clicked", facts, ["c"], "x"));
  assert.ok(!matches({ ...f, tags: ["a"] }, "link.clicked", facts, null, "x"));
  assert.deepEqual(factsOf({ code: "abc", domain: "Go.Example", tags: ["t"] }), { code: "abc", domain: "go.example", tags: ["t"] });
});

test("addresses: IPv4, IPv6, mapped and embedded forms", () => {
  const refused: Record<string, string> = {
    "127.0.0.1": "loopback", "127.255.0.9": "loopback", "10.0.0.1": "private", "172.16.5.4": "private",
    "192.168.1.1": "private", "169.254.169.254": "link-local", "0.0.0.0": "unspecified", "224.0.0.1": "multicast",
    "100.64.0.1": "shared", "255.255.255.255": "reserved", "::1": "loopback", "::": "unspecified",
    "fe80::1": "link-local", "fe80::1%eth0": "link-local", "fc00::1": "unique-local", "fd12:3456::1": "unique-local",
    "ff02::1": "multicast", "::ffff:127.0.0.1": "loopback", "::ffff:7f00:1": "loopback", "::ffff:10.0.0.1": "private",
    "0:0:0:0:0:ffff:a9fe:a9fe": "link-local", "64:ff9b::7f00:1": "loopback", "2002:7f00:1::": "loopback",
    "2001:db8::1": "documentation", "::127.0.0.1": "IPv4-compatible (deprecated)", "fec0::1": "site-local",
  };
  for (const [a, why] of Object.entries(refused)) assert.equal(refusedReason(a), why, a);
  for (const a of ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2a00:1450:4001:80b::200e", "64:ff9b::808:808"]) {
    assert.equal(refusedReason(a), null, a);
  }
});

test("endpoint URLs: scheme, credentials, literal private addresses, localhost", () => {
  assert.equal(urlProblem("https://hooks.example.com/x", false, false), null);
  assert.match(urlProblem("http://hooks.example.com/x", false, false)!, /https/);
  assert.equal(urlProblem("http://hooks.example.com/x", true, false), null);
  assert.match(urlProblem("ftp://x.example/", true, false)!, /http/);
  assert.match(urlProblem("https://127.0.0.1/x", false, false)!, /loopback/);
  assert.match(urlProblem("https://[::ffff:127.0.0.1]/x", false, false)!, /loopback/);
  assert.match(urlProblem("https://[fd00::1]/x", false, false)!, /unique-local/);
  assert.match(urlProblem("https://localhost:8443/x", false, false)!, /localhost/);
  assert.match(urlProblem("https://a.localhost/x", false, false)!, /localhost/);
  assert.equal(urlProblem("https://127.0.0.1/x", false, true), null);
  assert.match(urlProblem("https://u:p@hooks.example.com/", false, false)!, /credentials/);
  assert.match(urlProblem("not a url", false, false)!, /absolute/);
  assert.match(urlProblem(`https://x.example/${"a".repeat(2100)}`, false, false)!, /2048/);
});

test("guarded lookup refuses names resolving to loopback", async () => {
  const lookup = guardedLookup(false);
  const err = await new Promise<Error | null>((resolve) => lookup("localhost", { all: true }, (e) => resolve(e)));
  assert.ok(err);
  assert.match(err!.message, /refused: localhost resolves to a loopback address/);
  const ok = await new Promise<unknown>((resolve) => guardedLookup(true)("localhost", {}, (e, a) => resolve(e ?? a)));
  assert.equal(typeof ok, "string");
});

test("cursors round-trip and reject junk", () => {
  const c = { us: 1764651553123456n, id: "msg_06h3anh0y8c22xhwgh7efsvre0" };
  assert.deepEqual(decodeCursor(encodeCursor(c)), c);
  for (const bad of ["", "!!", "bm90IGpzb24", Buffer.from('["x","y"]').toString("base64url"), Buffer.from("[1,2]").toString("base64url")]) {
    assert.equal(decodeCursor(bad), null, bad);
  }
});

test("settings: defaults, NATS URLs with credentials, bad values", () => {
  const s = loadSettings({});
  assert.equal(s.port, 8085);
  assert.equal(s.host, "127.0.0.1");
  assert.deepEqual(s.nats.servers, ["127.0.0.1:4222"]);
  assert.equal(s.allowHttp, false);
  assert.equal(s.allowPrivate, false);
  assert.equal(s.authOff, false);
  assert.equal(s.retryScale, 1);
  const n = parseNatsUrl("nats://web%40hooks:p%3Ass@n1:4222, nats://n2:4223", "X");
  assert.deepEqual(n.servers, ["n1:4222", "n2:4223"]);
  assert.equal(n.user, "web@hooks");
  assert.equal(n.pass, "p:ss");
  assert.equal(n.tls, false);
  assert.equal(parseNatsUrl("tls://n1", "X").tls, true);
  assert.equal(parseNatsUrl("nats://tok@n1", "X").token, "tok");
  const w = loadSettings({ LINKFLOW_NATS_URL: "nats://a:1", LINKFLOW_WEBHOOKS_NATS_URL: "nats://b:2", LINKFLOW_NATS_CREDS: "/x.creds", LINKFLOW_AUTH: "off" });
  assert.deepEqual(w.nats.servers, ["b:2"]);
  assert.equal(w.nats.creds, "/x.creds");
  assert.equal(w.authOff, true);
  assert.equal(loadSettings({ LINKFLOW_PUBLIC_URL: "https://Go.Example/" }).defaultDomain, "go.example");
  // The web app's origins, as the gateway reads LINKFLOW_APP_URL: both loopback spellings, no default port.
  assert.deepEqual(s.appOrigins, ["http://127.0.0.1:8081", "http://localhost:8081"]);
  assert.deepEqual(loadSettings({ LINKFLOW_APP_URL: "https://App.Sho.rt:443/app/, http://[::1]:8082" }).appOrigins, ["https://app.sho.rt", "http://[::1]:8082"]);
  // Its own database: <database>_webhooks on the main database's server, unless given.
  assert.equal(s.databaseUrl, "postgresql://postgres@127.0.0.1:5432/linkflow_webhooks");
  assert.equal(loadSettings({ LINKFLOW_DATABASE_URL: "postgresql://u:p@db:5433/lf?sslmode=require" }).databaseUrl, "postgresql://u:p@db:5433/lf_webhooks?sslmode=require");
  assert.equal(loadSettings({ LINKFLOW_DATABASE_URL: "postgresql://u@/lf?host=/run/postgresql" }).databaseUrl, "postgresql://u@/lf_webhooks?host=/run/postgresql");
  assert.equal(loadSettings({ LINKFLOW_DATABASE_URL: "postgresql://u@/lf", LINKFLOW_WEBHOOKS_DATABASE_URL: "postgresql://w@h/x" }).databaseUrl, "postgresql://w@h/x");
  // The yield lag as the Python services write durations, and below the ack wait.
  assert.equal(s.yieldLagMs, 20_000);
  assert.equal(loadSettings({ LINKFLOW_WEBHOOKS_YIELD_LAG: "1.5" }).yieldLagMs, 1500);
  assert.equal(loadSettings({ LINKFLOW_WEBHOOKS_YIELD_LAG: "500ms" }).yieldLagMs, 500);
  assert.equal(loadSettings({ LINKFLOW_WEBHOOKS_YIELD_LAG: "0" }).yieldLagMs, 0);
  for (const bad of [
    { LINKFLOW_WEBHOOKS_YIELD_LAG: "26s" }, { LINKFLOW_WEBHOOKS_YIELD_LAG: "1m" }, { LINKFLOW_WEBHOOKS_YIELD_LAG: "soon" },
    { LINKFLOW_WEBHOOKS_PORT: "http" }, { LINKFLOW_WEBHOOKS_PORT: "70000" }, { LINKFLOW_WEBHOOKS_ALLOW_HTTP: "maybe" },
    { LINKFLOW_NATS_URL: "http://x" }, { LINKFLOW_WEBHOOKS_DATABASE_URL: "mysql://x" }, { LINKFLOW_LOG_LEVEL: "loud" },
    { LINKFLOW_AUTH: "sometimes" }, { LINKFLOW_WEBHOOKS_RETRY_SCALE: "-1" },
    { LINKFLOW_APP_URL: "not a url" }, { LINKFLOW_APP_URL: "ftp://app.example" }, { LINKFLOW_APP_URL: " , " },
  ] as Array<Record<string, string>>) {
    assert.throws(() => loadSettings(bad), SettingsError, JSON.stringify(bad));
  }
});

test("signatures verify with standardwebhooks, with both secrets during a rotation", () => {
  const old = newSecret();
  const cur = newSecret();
  assert.match(cur, /^whsec_[A-Za-z0-9+/]{43}=$/);
  const body = buildBody("link.clicked", '{"id":"c1","code":"abc","ts":"2026-01-01T00:00:00.000Z"}', new Date("2026-01-01T00:00:00.000Z"));
  assert.equal(body, '{"type":"link.clicked","timestamp":"2026-01-01T00:00:00.000Z","data":{"id":"c1","code":"abc","ts":"2026-01-01T00:00:00.000Z"}}');
  const now = new Date();
  const sig = sign("msg_1", now, body, [cur, old]);
  assert.equal(sig.split(" ").length, 2);
  const headers = { "webhook-id": "msg_1", "webhook-timestamp": String(Math.floor(now.getTime() / 1000)), "webhook-signature": sig };
  for (const s of [cur, old]) assert.deepEqual(new Webhook(s).verify(body, headers), JSON.parse(body));
  assert.throws(() => new Webhook(newSecret()).verify(body, headers));
  assert.throws(() => new Webhook(cur).verify(body + " ", headers));
});

test("parse: validates payloads against the schemas", () => {
  const msg = (subject: string, data: string | Uint8Array, id = "x") => ({
    subject, data: typeof data === "string" ? new TextEncoder().encode(data) : data, seq: 7,
    headers: undefined, info: { stream: "LINKS" },
  });
  const ok = parse(msg("links.deleted", '{"code":"abc","version":3,"deleted_at":"2026-01-01T00:00:00.000Z","extra":1}'));
  assert.equal(typeof ok, "object");
  assert.match(parse(msg("links.deleted", '{"code":"abc"}')) as string, /schema/);
  assert.match(parse(msg("links.deleted", "[1]")) as string, /object/);
  assert.match(parse(msg("links.deleted", "{nope")) as string, /JSON/);
  assert.match(parse(msg("links.deleted", new Uint8Array([0xff, 0xfe]))) as string, /UTF-8/);
  assert.match(parse(msg("links.other", "{}")) as string, /subject/);
  assert.match(parse(msg("clicks.abc", '{"id":"c","code":"abc","ts":"2026-01-01T00:00:00.000Z","referrer":"a\\u0000b"}')) as string, /U\+0000/);
  assert.equal(typeof parse(msg("clicks.abc", '{"id":"c","code":"abc","ts":"2026-01-01T00:00:00.000Z"}')), "object");
});

test("API keys: hash lookup, scopes, revoked, expired, invalid records", () => {
  const ring = new KeyRing();
  const rec = (scopes: string[], extra = {}) => ({ name: "k", prefix: "lf_", sha256: sha256Hex("secret-1"), scopes, created_at: "2026-01-01T00:00:00.000Z", expires_at: null, revoked_at: null, ...extra });
  assert.equal(ring.check("Bearer secret-1").ok, false);
  ring.put("k", rec(["webhooks"]));
  assert.equal(ring.check("Bearer secret-1").ok, true);
  assert.deepEqual(ring.check(undefined), { ok: false, status: 401, detail: "an API key is required: Authorization: Bearer <key>" });
  assert.equal((ring.check("Bearer nope") as { status: number }).status, 401);
  ring.put("k", rec(["links:read"]));
  const r = ring.check("Bearer secret-1") as { status: number; detail: string };
  assert.equal(r.status, 403);
  assert.match(r.detail, /webhooks/);
  ring.put("k", rec(["admin"]));
  assert.equal(ring.check("Bearer secret-1").ok, true);
  // A key limited to domains would see every domain's events through an endpoint.
  ring.put("k", rec(["admin"], { domains: ["go.example.com"] }));
  const limited = ring.check("Bearer secret-1") as { status: number; detail: string };
  assert.equal(limited.status, 403);
  assert.match(limited.detail, /limited to domains/);
  ring.put("k", rec(["admin"], { domains: [] }));
  assert.equal(ring.check("Bearer secret-1").ok, true);
  ring.put("k", rec(["admin"], { revoked_at: "2026-01-01T00:00:00.000Z" }));
  assert.equal((ring.check("Bearer secret-1") as { status: number }).status, 401);
  ring.put("k", rec(["admin"], { expires_at: "2000-01-01T00:00:00.000Z" }));
  assert.equal((ring.check("Bearer secret-1") as { status: number }).status, 401);
  ring.put("k", { name: "k", sha256: "zz" });
  assert.equal(ring.check("Bearer secret-1").ok, false);
  ring.put("k", rec(["webhooks"]));
  ring.remove("k");
  assert.equal(ring.check("Bearer secret-1").ok, false);
});

test("rate limiter: bursts, then the rate", () => {
  const r = new RateLimiter(10, 50);
  const t = 1_000_000;
  for (let i = 0; i < 50; i++) assert.equal(r.take("ip", t), 0);
  assert.ok(r.take("ip", t) >= 1);
  assert.equal(r.take("ip", t + 100), 0); // 0.1 s: one token back
  assert.equal(r.take("other", t), 0);
});

test("a sender leaves no listener on the shutdown signal once an attempt ends (200 attempts, ok and failed)", async () => {
  let n = 0;
  const server = http.createServer((_req, res) => res.writeHead(++n % 2 ? 204 : 500).end());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;
  const sender = new Sender({ allowPrivate: true, allowHttp: true });
  const shutdown = new AbortController();
  try {
    const results = await Promise.all(Array.from({ length: 200 }, () => sender.send(url, {}, "{}", shutdown.signal)));
    assert.equal(results.filter((r) => r.ok).length, 100);
    assert.equal(getEventListeners(shutdown.signal, "abort").length, 0);
  } finally {
    sender.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
