// Deliveries from a real NATS to local receivers: signatures, retries, isolation, SSRF.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { hostname } from "node:os";
import { lookup } from "node:dns/promises";
import { Webhook } from "standardwebhooks";
import pg from "pg";
import type { NatsConnection } from "@nats-io/transport-node";
import { refusedReason } from "../src/address.ts";
import { Receiver, SKIP, Service, api, click, freshDatabase, linkUpdated, natsConnect, publish, putKey, serviceEnv, waitFor } from "./helpers.ts";

describe("delivery", { skip: SKIP }, () => {
  let nc: NatsConnection;
  let svc: Service;
  let key: string;
  let db: string;
  const receivers: Receiver[] = [];
  const ep = (m: string, p: string, b?: unknown) => api(svc.base, key, m, `/api/webhooks${p}`, b);
  const receiver = async () => {
    const r = await new Receiver().listen();
    receivers.push(r);
    return r;
  };

  before(async () => {
    nc = await natsConnect();
    key = await putKey(nc, "wh-test-delivery", ["webhooks"]);
    db = await freshDatabase();
    svc = await Service.start(serviceEnv(db));
    await waitFor(async () => (await ep("GET", "")).status === 200, 10_000, "the key");
  });
  after(async () => {
    await svc?.stop();
    for (const r of receivers) await r.close();
    await nc?.close();
  });

  test("a link.updated delivery, signed as Standard Webhooks says", async () => {
    const r = await receiver();
    const c = await ep("POST", "", { url: r.url, events: ["link.updated"], codes: ["signed1"] });
    assert.equal(c.status, 201);
    const payload = linkUpdated("signed1", { tags: ["a"], future_field: { x: 1 } });
    await publish(nc, "links.updated", payload, "req-signed-1");
    const got = await waitFor(() => r.got[0], 10_000, "the delivery");
    assert.equal(got.headers["content-type"], "application/json");
    const verified = new Webhook(c.json.secret).verify(got.body, got.headers as Record<string, string>) as { type: string; timestamp: string; data: unknown };
    assert.equal(verified.type, "link.updated");
    assert.deepEqual(verified.data, payload);
    assert.match(verified.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.match(String(got.headers["webhook-id"]), /^msg_/);
    const list = await ep("GET", `/${c.json.id}/deliveries`);
    assert.equal(list.json.items[0].id, got.headers["webhook-id"]);
    await waitFor(async () => (await ep("GET", `/${c.json.id}/deliveries`)).json.items[0].status === "delivered", 5000, "delivered status");
    const one = await ep("GET", `/${c.json.id}/deliveries/${got.headers["webhook-id"]}`);
    assert.equal(one.json.attempts, 1);
    assert.equal(one.json.last_status_code, 200);
    assert.equal(one.json.attempt_log.length, 1);
    assert.ok(svc.lines.some((l) => l.includes("req-signed-1") && l.includes("delivered")), "request_id in the delivery's log line");
  });

  test("a receiver failing twice, then succeeding: 3 attempts, delivered, byte-identical, same webhook-id", async () => {
    const r = await receiver();
    r.respond = (n) => (n <= 2 ? 503 : 200);
    const c = await ep("POST", "", { url: r.url, events: ["link.deleted"], codes: ["retry1"] });
    await publish(nc, "links.deleted", { code: "retry1", version: 3, deleted_at: new Date().toISOString() });
    await waitFor(() => r.got.length >= 3, 15_000, "three attempts");
    assert.equal(new Set(r.got.map((g) => g.body)).size, 1);
    assert.equal(new Set(r.got.map((g) => g.headers["webhook-id"])).size, 1);
    for (const g of r.got) new Webhook(c.json.secret).verify(g.body, g.headers as Record<string, string>);
    const id = String(r.got[0].headers["webhook-id"]);
    const d = await waitFor(async () => {
      const x = await ep("GET", `/${c.json.id}/deliveries/${id}`);
      return x.json.status === "delivered" ? x.json : null;
    }, 5000, "delivered");
    assert.equal(d.attempts, 3);
    assert.deepEqual(d.attempt_log.map((a: { status_code: number }) => a.status_code), [503, 503, 200]);
    assert.equal(r.got.length, 3);
  });

  test("a redirect is a failure, not followed; after the last attempt: failed, then retriable", async () => {
    const r = await receiver();
    r.respond = () => 302;
    const c = await ep("POST", "", { url: r.url, events: ["link.deleted"], codes: ["redir1"] });
    await publish(nc, "links.deleted", { code: "redir1", version: 3, deleted_at: new Date().toISOString() });
    // LINKFLOW_WEBHOOKS_RETRY_SCALE=0.00002: the 8 attempts' schedule (27.6 h) takes about 2 s.
    await waitFor(() => r.got.length >= 1, 10_000, "the first attempt");
    const id = String(r.got[0].headers["webhook-id"]);
    const d = await waitFor(async () => {
      const x = await ep("GET", `/${c.json.id}/deliveries/${id}`);
      return x.json.status === "failed" ? x.json : null;
    }, 30_000, "failed after the last attempt");
    assert.equal(d.attempts, 8);
    assert.equal(d.attempt_log.length, 8);
    assert.equal(d.last_status_code, 302);
    assert.match(d.last_error, /redirect/);
    assert.equal(d.next_attempt_at, null);
    assert.equal(r.got.length, 8);
    const failed = await ep("GET", `/${c.json.id}/deliveries?status=failed`);
    assert.deepEqual(failed.json.items.map((x: { id: string }) => x.id), [id]);
    r.respond = () => 204;
    assert.equal((await ep("POST", `/${c.json.id}/deliveries/${id}/retry`)).status, 202);
    await waitFor(async () => (await ep("GET", `/${c.json.id}/deliveries/${id}`)).json.status === "delivered", 10_000, "delivered after the retry");
    assert.equal(r.got.length, 9);
  });

  test("an endpoint whose last 100 attempts failed is disabled; a success resets the count", async () => {
    const r = await receiver();
    r.respond = () => 500;
    const c = await ep("POST", "", { url: r.url, events: ["link.updated"], codes: ["dis1"] });
    const pool = new pg.Pool({ connectionString: db, max: 1 });
    try {
      // 99 failures so far (as if from earlier deliveries).
      await pool.query("UPDATE endpoints SET consecutive_failures = 99 WHERE id = $1", [c.json.id]);
      await publish(nc, "links.updated", linkUpdated("dis1"));
      const e = await waitFor(async () => {
        const x = await ep("GET", `/${c.json.id}`);
        return x.json.enabled === false ? x.json : null;
      }, 10_000, "the endpoint to be disabled");
      assert.match(e.disabled_reason, /100/);
      const n = r.got.length;
      // Disabled: its delivery stays pending (not claimed) until the endpoint is enabled again.
      const list = await ep("GET", `/${c.json.id}/deliveries`);
      assert.equal(list.json.items[0].status, "pending");
      const p = await ep("PATCH", `/${c.json.id}`, { enabled: true });
      assert.equal(p.json.disabled_reason, null);
      assert.equal((await pool.query("SELECT consecutive_failures FROM endpoints WHERE id = $1", [c.json.id])).rows[0].consecutive_failures, 0);
      r.respond = () => 200;
      await waitFor(async () => (await ep("GET", `/${c.json.id}/deliveries`)).json.items[0].status === "delivered", 10_000, "delivered once re-enabled");
      assert.ok(r.got.length > n);
    } finally {
      await pool.end();
    }
  });

  test("a hanging endpoint delays no other", async () => {
    const slow = await receiver();
    slow.respond = () => "hang";
    const fast = await receiver();
    await ep("POST", "", { url: slow.url, events: ["link.updated"], codes: ["iso1"] });
    await ep("POST", "", { url: fast.url, events: ["link.updated"], codes: ["iso1"] });
    for (let i = 0; i < 12; i++) await publish(nc, "links.updated", linkUpdated("iso1", { version: 10 + i }));
    const t0 = Date.now();
    await waitFor(() => fast.got.length >= 12, 5000, "all 12 at the fast endpoint");
    assert.ok(Date.now() - t0 < 5000);
    // The slow one has at most its concurrency (4) in flight.
    await waitFor(() => slow.got.length >= 1, 5000, "the slow one to be tried");
    assert.ok(slow.got.length <= 4, `${slow.got.length} in flight at the slow endpoint`);
  });

  test("secret rotation: both secrets sign for the overlap", async () => {
    const r = await receiver();
    const c = await ep("POST", "", { url: r.url, events: ["link.updated"], codes: ["rot1"] });
    const s = await ep("POST", `/${c.json.id}/secret`);
    await ep("POST", `/${c.json.id}/test`);
    const got = await waitFor(() => r.got[0], 10_000, "the test delivery");
    assert.equal(String(got.headers["webhook-signature"]).split(" ").length, 2);
    for (const secret of [c.json.secret, s.json.secret]) {
      const v = new Webhook(secret).verify(got.body, got.headers as Record<string, string>) as { type: string; data: { endpoint_id: string } };
      assert.equal(v.type, "webhook.test");
      assert.equal(v.data.endpoint_id, c.json.id);
    }
  });

  test("link.clicked, with a tag filter read from the link's events", async () => {
    const r = await receiver();
    await ep("POST", "", { url: r.url, events: ["link.clicked"], tags: ["promo"] });
    await publish(nc, "links.updated", linkUpdated("tagged1", { tags: ["promo", "x"], version: 5 }));
    await publish(nc, "links.updated", linkUpdated("plain1", { tags: ["other"], version: 5 }));
    // The link events must be taken before the clicks.
    const pool = new pg.Pool({ connectionString: db, max: 1 });
    try {
      await waitFor(async () => (await pool.query("SELECT count(*)::int AS n FROM link_tags WHERE code IN ('tagged1', 'plain1')")).rows[0].n === 2, 5000, "the link events to be taken");
    } finally {
      await pool.end();
    }
    const tagged = click("tagged1");
    await publish(nc, "clicks.plain1", click("plain1"));
    await publish(nc, "clicks.tagged1", tagged);
    const got = await waitFor(() => r.got[0], 10_000, "the tagged click");
    assert.equal(JSON.parse(got.body).data.id, tagged.id);
    assert.equal(JSON.parse(got.body).type, "link.clicked");
    // A later tagged click arriving means the plain one (published before) was not delivered.
    const t2 = click("tagged1");
    await publish(nc, "clicks.tagged1", t2);
    await waitFor(() => r.got.length >= 2, 10_000, "the second tagged click");
    assert.ok(r.got.every((g) => JSON.parse(g.body).data.code === "tagged1"));
  });

  test("events published while the service is down (kill -9) are delivered after its restart", async () => {
    const r = await receiver();
    await ep("POST", "", { url: r.url, events: ["link.updated"], codes: ["down1"] });
    await svc.stop("SIGKILL");
    await publish(nc, "links.updated", linkUpdated("down1"));
    svc = await Service.start(serviceEnv(db));
    await waitFor(() => r.got[0], 10_000, "the delivery after the restart");
  });

  test("a private or loopback target is refused unless ALLOW_PRIVATE", async (t) => {
    const host = hostname();
    const addr = await lookup(host).then((a) => a.address, () => null);
    if (!addr || !refusedReason(addr)) return t.skip(`${host} does not resolve to a private address here`);
    const r = await receiver();
    const port = new URL(r.url).port;
    const strict = await Service.start(serviceEnv(await freshDatabase(), { LINKFLOW_WEBHOOKS_ALLOW_PRIVATE: "false" }));
    try {
      const sapi = (m: string, p: string, b?: unknown) => api(strict.base, key, m, `/api/webhooks${p}`, b);
      await waitFor(async () => (await sapi("GET", "")).status === 200, 10_000, "the key");
      assert.equal((await sapi("POST", "", { url: `http://127.0.0.1:${port}/hook`, events: ["link.updated"] })).status, 422);
      assert.equal((await sapi("POST", "", { url: `http://localhost:${port}/hook`, events: ["link.updated"] })).status, 422);
      // A DNS name resolving to a loopback/private address: accepted, but never connected to.
      const c = await sapi("POST", "", { url: `http://${host}:${port}/hook`, events: ["link.updated"] });
      assert.equal(c.status, 201);
      const t1 = await sapi("POST", `/${c.json.id}/test`);
      const d = await waitFor(async () => {
        const x = await sapi("GET", `/${c.json.id}/deliveries/${t1.json.id}`);
        return x.json.attempts >= 1 ? x.json : null;
      }, 10_000, "a refused attempt");
      assert.match(d.last_error, /refused/);
      assert.equal(d.last_status_code, null);
      assert.equal(r.got.length, 0);
      const m = await (await fetch(`${strict.base}/metrics`)).text();
      assert.match(m, /linkflow_webhook_deliveries_total\{outcome="refused"\} [1-9]/);
    } finally {
      await strict.stop();
    }
    // The main test service (ALLOW_PRIVATE=true) delivers to the same name.
    const c2 = await ep("POST", "", { url: `http://${host}:${port}/hook`, events: ["link.updated"] });
    await ep("POST", `/${c2.json.id}/test`);
    await waitFor(() => r.got[0], 10_000, "the delivery with ALLOW_PRIVATE");
  });
});
