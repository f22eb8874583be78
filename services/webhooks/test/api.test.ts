// The HTTP API against a real nats-server and PostgreSQL.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { SKIP, Service, api, freshDatabase, natsConnect, putKey, serviceEnv, waitFor } from "./helpers.ts";

describe("API", { skip: SKIP }, () => {
  let nc: NatsConnection;
  let svc: Service;
  let key: string;
  let readOnly: string;
  const ep = (base: string, k: string | null, m: string, p: string, b?: unknown) => api(base, k, m, `/api/webhooks${p}`, b);

  before(async () => {
    nc = await natsConnect();
    key = await putKey(nc, "wh-test-webhooks", ["webhooks"]);
    readOnly = await putKey(nc, "wh-test-reader", ["links:read", "stats:read"]);
    svc = await Service.start(serviceEnv(await freshDatabase(), { LINKFLOW_WEBHOOKS_ALLOW_PRIVATE: "false", LINKFLOW_WEBHOOKS_ALLOW_HTTP: "false" }));
    await waitFor(async () => (await ep(svc.base, key, "GET", "")).status === 200, 10_000, "the key to be loaded");
  });
  after(async () => {
    await svc?.stop();
    await nc?.close();
  });

  test("health, readiness, metrics, OpenAPI are public", async () => {
    assert.equal((await api(svc.base, null, "GET", "/healthz")).status, 200);
    const ready = await waitFor(async () => {
      const r = await api(svc.base, null, "GET", "/readyz");
      return r.status === 200 ? r : null;
    }, 10_000, "ready");
    assert.equal(ready.status, 200);
    const m = await fetch(`${svc.base}/metrics`);
    const text = await m.text();
    for (const name of ["linkflow_webhook_deliveries_total", "linkflow_webhook_attempt_duration_seconds", "linkflow_webhook_oldest_pending_seconds", "process_cpu_user_seconds_total"]) {
      assert.match(text, new RegExp(name));
    }
    const doc = (await api(svc.base, null, "GET", "/api/webhooks/openapi.json")).json;
    assert.equal(doc.openapi, "3.1.0");
    const paths = Object.keys(doc.paths);
    for (const p of ["/api/webhooks", "/api/webhooks/{id}", "/api/webhooks/{id}/secret", "/api/webhooks/{id}/test", "/api/webhooks/{id}/deliveries", "/api/webhooks/{id}/deliveries/{delivery_id}", "/api/webhooks/{id}/deliveries/{delivery_id}/retry"]) {
      assert.ok(paths.includes(p), `${p} in ${paths}`);
    }
    const create = doc.paths["/api/webhooks"].post;
    assert.deepEqual((await api(svc.base, null, "GET", "/api/openapi.json")).json, doc);
    assert.equal(create.operationId, "create_webhook");
    assert.equal(create["x-scope"], "webhooks");
    assert.ok(create.responses["201"] && create.responses["422"] && create.responses["401"]);
    assert.ok(create.responses["422"].content["application/problem+json"]);
    assert.ok(doc.components.schemas.Problem && doc.components.schemas.EndpointWithSecret);
  });

  test("401 without a key, with an unknown or revoked one; 403 without the scope", async () => {
    for (const k of [null, "nope"]) {
      const r = await ep(svc.base, k, "GET", "");
      assert.equal(r.status, 401);
      assert.match(r.headers.get("content-type")!, /application\/problem\+json/);
      assert.match(r.headers.get("www-authenticate")!, /^Bearer/);
      assert.equal(r.json.status, 401);
      assert.ok(r.json.type && r.json.title && r.json.detail);
    }
    const r = await ep(svc.base, readOnly, "GET", "");
    assert.equal(r.status, 403);
    assert.match(r.json.detail, /webhooks/);
    const admin = await putKey(nc, "wh-test-admin", ["admin"]);
    await waitFor(async () => (await ep(svc.base, admin, "GET", "")).status === 200, 5000, "admin key");
    // Revocation takes effect within 2 s.
    const kv = await new Kvm(nc).open("api_keys");
    const rec = JSON.parse((await kv.get("wh-test-admin"))!.string());
    const t0 = Date.now();
    await kv.put("wh-test-admin", JSON.stringify({ ...rec, revoked_at: new Date().toISOString() }));
    await waitFor(async () => (await ep(svc.base, admin, "GET", "")).status === 401, 2000, "the revocation");
    assert.ok(Date.now() - t0 < 2000);
  });

  test("create, read, list, patch, rotate, delete", async () => {
    const c = await ep(svc.base, key, "POST", "", { url: "https://hooks.example.com/x", events: ["link.updated", "link.deleted"], codes: ["sale"], tags: ["promo"], domains: ["Go.Example"], description: "crm" });
    assert.equal(c.status, 201, JSON.stringify(c.json));
    assert.match(c.json.id, /^ep_/);
    assert.match(c.json.secret, /^whsec_/);
    assert.ok(Buffer.from(c.json.secret.slice(6), "base64").length >= 24);
    assert.deepEqual(c.json.domains, ["go.example"]);
    assert.equal(c.json.enabled, true);
    const id = c.json.id;
    const g = await ep(svc.base, key, "GET", `/${id}`);
    assert.equal(g.status, 200);
    assert.equal(g.json.secret, undefined);
    assert.equal(g.json.url, "https://hooks.example.com/x");
    const l = await ep(svc.base, key, "GET", "");
    assert.ok(l.json.items.some((e: { id: string; secret?: string }) => e.id === id && e.secret === undefined));
    const p = await ep(svc.base, key, "PATCH", `/${id}`, { description: "changed", enabled: false });
    assert.equal(p.status, 200);
    assert.equal(p.json.description, "changed");
    assert.equal(p.json.enabled, false);
    assert.ok(p.json.disabled_reason);
    const p2 = await ep(svc.base, key, "PATCH", `/${id}`, { enabled: true });
    assert.equal(p2.json.enabled, true);
    assert.equal(p2.json.disabled_reason, null);
    const s = await ep(svc.base, key, "POST", `/${id}/secret`);
    assert.equal(s.status, 200);
    assert.match(s.json.secret, /^whsec_/);
    assert.notEqual(s.json.secret, c.json.secret);
    const t = await ep(svc.base, key, "POST", `/${id}/test`);
    assert.equal(t.status, 202);
    const d = await ep(svc.base, key, "GET", `/${id}/deliveries?limit=10`);
    assert.equal(d.status, 200);
    assert.equal(d.json.items[0].event_type, "webhook.test");
    assert.equal(d.json.next_cursor, null);
    const one = await ep(svc.base, key, "GET", `/${id}/deliveries/${t.json.id}`);
    assert.equal(one.status, 200);
    assert.ok(Array.isArray(one.json.attempt_log));
    assert.equal((await ep(svc.base, key, "POST", `/${id}/deliveries/${t.json.id}/retry`)).status, 202);
    assert.equal((await ep(svc.base, key, "DELETE", `/${id}`)).status, 204);
    assert.equal((await ep(svc.base, key, "GET", `/${id}`)).status, 404);
    assert.equal((await ep(svc.base, key, "DELETE", `/${id}`)).status, 404);
  });

  test("CORS: the web app's origins only (LINKFLOW_APP_URL), preflight answered without a key", async () => {
    const preflight = (origin: string, path = "/api/webhooks", method = "PATCH") =>
      fetch(`${svc.base}${path}`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": method, "access-control-request-headers": "authorization, content-type" },
      });
    // The default LINKFLOW_APP_URL, as the browser may spell it either way.
    for (const app of ["http://127.0.0.1:8081", "http://localhost:8081"]) {
      const r = await preflight(app, "/api/webhooks/ep_x/deliveries/msg_y/retry", "POST");
      assert.equal(r.status, 204);
      assert.equal(r.headers.get("access-control-allow-origin"), app);
      assert.equal(r.headers.get("access-control-allow-credentials"), null);
      assert.deepEqual(r.headers.get("access-control-allow-methods")!.split(/, */).sort(), ["DELETE", "GET", "PATCH", "POST"]);
      assert.deepEqual(r.headers.get("access-control-allow-headers")!.split(/, */).sort(), ["authorization", "content-type"]);
      assert.match(r.headers.get("vary") ?? "", /origin/i);
    }
    // Another origin (another port is another origin): no Access-Control-Allow-Origin.
    for (const other of ["https://evil.example", "http://127.0.0.1:8080", "null"]) {
      const r = await preflight(other);
      assert.equal(r.headers.get("access-control-allow-origin"), null, other);
      assert.notEqual(r.status, 204, other);
    }
    // The calls themselves: the app's origin may read the answer (a problem too), another may not.
    const call = (origin: string, k: string | null) =>
      fetch(`${svc.base}/api/webhooks`, { headers: { origin, ...(k ? { authorization: `Bearer ${k}` } : {}) } });
    const ok = await call("http://127.0.0.1:8081", key);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("access-control-allow-origin"), "http://127.0.0.1:8081");
    const refused = await call("http://localhost:8081", null);
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get("access-control-allow-origin"), "http://localhost:8081");
    const other = await call("https://evil.example", key);
    assert.equal(other.status, 200);
    assert.equal(other.headers.get("access-control-allow-origin"), null);
    // Only /api/*: health and metrics are no browser's business.
    const health = await fetch(`${svc.base}/healthz`, { headers: { origin: "http://127.0.0.1:8081" } });
    assert.equal(health.headers.get("access-control-allow-origin"), null);
  });

  test("404s", async () => {
    for (const [m, p] of [["GET", "/ep_nope"], ["PATCH", "/ep_nope"], ["DELETE", "/ep_nope"], ["POST", "/ep_nope/secret"], ["POST", "/ep_nope/test"], ["GET", "/ep_nope/deliveries"], ["GET", "/ep_nope/deliveries/msg_x"], ["POST", "/ep_nope/deliveries/msg_x/retry"]] as const) {
      const r = await ep(svc.base, key, m, p, m === "PATCH" ? { description: "x" } : undefined);
      assert.equal(r.status, 404, `${m} ${p}`);
      assert.match(r.headers.get("content-type")!, /problem\+json/);
    }
  });

  test("422 naming the field; 400 for malformed JSON; 413 for a large body", async () => {
    const cases: Array<[unknown, string]> = [
      [{ events: ["link.clicked"] }, "url"],
      [{ url: "https://x.example/", events: [] }, "events"],
      [{ url: "https://x.example/", events: ["link.exploded"] }, "events[0]"],
      [{ url: "http://x.example/", events: ["link.clicked"] }, "url"],
      [{ url: "https://127.0.0.1/", events: ["link.clicked"] }, "url"],
      [{ url: "https://localhost/", events: ["link.clicked"] }, "url"],
      [{ url: "https://[::ffff:10.0.0.1]/", events: ["link.clicked"] }, "url"],
      [{ url: "https://x.example/", events: ["link.clicked"], codes: ["a b"] }, "codes[0]"],
      [{ url: "https://x.example/", events: ["link.clicked"], tags: Array.from({ length: 101 }, (_, i) => `t${i}`) }, "tags"],
      [{ url: "https://x.example/", events: ["link.clicked"], bogus: 1 }, "bogus"],
    ];
    for (const [body, field] of cases) {
      const r = await ep(svc.base, key, "POST", "", body);
      assert.equal(r.status, 422, JSON.stringify(body));
      assert.ok(r.json.errors.some((e: { field: string }) => e.field === field), `${field} in ${JSON.stringify(r.json)}`);
    }
    const bad = await ep(svc.base, key, "POST", "", "{not json");
    assert.equal(bad.status, 400);
    const big = await ep(svc.base, key, "POST", "", { url: "https://x.example/", events: ["link.clicked"], description: "x".repeat(70_000) });
    assert.equal(big.status, 413);
    const c = await ep(svc.base, key, "POST", "", { url: "https://x.example/", events: ["link.created"] });
    for (const q of ["limit=0", "limit=101", "limit=x", "status=weird", "cursor=%21%21"]) {
      const r = await ep(svc.base, key, "GET", `/${c.json.id}/deliveries?${q}`);
      assert.equal(r.status, 422, q);
      assert.equal(r.json.errors[0].field, q.split("=")[0]);
    }
    const p = await ep(svc.base, key, "PATCH", `/${c.json.id}`, { enabled: "yes" });
    assert.equal(p.status, 422);
    assert.equal(p.json.errors[0].field, "enabled");
  });

  test("deliveries page with an opaque cursor, newest first", async () => {
    const c = await ep(svc.base, key, "POST", "", { url: "https://x.example/", events: ["link.created"], description: "paging" });
    await ep(svc.base, key, "PATCH", `/${c.json.id}`, { enabled: false }); // keep them pending
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await ep(svc.base, key, "POST", `/${c.json.id}/test`)).json.id);
    const seen: string[] = [];
    let cursor: string | null = "";
    while (cursor !== null) {
      const r = await ep(svc.base, key, "GET", `/${c.json.id}/deliveries?limit=2${cursor ? `&cursor=${cursor}` : ""}`);
      assert.equal(r.status, 200);
      assert.ok(r.json.items.length <= 2);
      seen.push(...r.json.items.map((d: { id: string }) => d.id));
      cursor = r.json.next_cursor;
    }
    assert.deepEqual(seen, ids.reverse());
    const pending = await ep(svc.base, key, "GET", `/${c.json.id}/deliveries?status=pending`);
    assert.equal(pending.json.items.length, 5);
    assert.equal((await ep(svc.base, key, "GET", `/${c.json.id}/deliveries?status=delivered`)).json.items.length, 0);
  });

  test("failed authentications are rate-limited per client address", async () => {
    // 50 failures pass (the burst), then 429 until tokens come back at 10/s.
    let r = await ep(svc.base, "wrong", "GET", "");
    for (let i = 0; i < 200 && r.status !== 429; i++) r = await ep(svc.base, "wrong", "GET", "");
    assert.equal(r.status, 429);
    assert.ok(Number(r.headers.get("retry-after")) >= 1);
    assert.equal(r.json.status, 429);
    assert.match(r.headers.get("content-type")!, /problem\+json/);
  });

  test("SIGTERM: exits 0", async () => {
    const s = await Service.start(serviceEnv(await freshDatabase()));
    assert.equal(await s.stop("SIGTERM"), 0);
    assert.match(s.logs(), /stopped/);
  });

  test("a bad setting: one line on stderr, exit 2", async () => {
    const s = new Service({ LINKFLOW_WEBHOOKS_PORT: "nope" });
    assert.equal(await s.exited, 2);
    assert.equal(s.lines.filter(Boolean).length, 1);
    assert.match(s.lines[0], /LINKFLOW_WEBHOOKS_PORT/);
  });
});
