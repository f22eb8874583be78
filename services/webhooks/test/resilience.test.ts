// Several replicas, and a database outage.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { DATABASE_URL, Receiver, SKIP, Service, api, click, freshDatabase, linkUpdated, natsConnect, publish, putKey, serviceEnv, waitFor } from "./helpers.ts";

describe("resilience", { skip: SKIP }, () => {
  let nc: NatsConnection;
  let key: string;
  const services: Service[] = [];
  const receivers: Receiver[] = [];

  before(async () => {
    nc = await natsConnect();
    key = await putKey(nc, "wh-test-resilience", ["webhooks"]);
  });
  after(async () => {
    for (const s of services) await s.stop();
    for (const r of receivers) await r.close();
    await nc?.close();
  });

  test("two replicas share the work: every event delivered once", async () => {
    const db = await freshDatabase();
    const a = await Service.start(serviceEnv(db));
    const b = await Service.start(serviceEnv(db));
    services.push(a, b);
    const r = await new Receiver().listen();
    receivers.push(r);
    const c = await api(a.base, key, "POST", "/api/webhooks", { url: r.url, events: ["link.updated", "link.clicked"], codes: ["rep1"] });
    assert.equal(c.status, 201);
    // Both replicas see the endpoint (b reconciles the clicks consumer on its own too).
    await waitFor(async () => (await api(b.base, key, "GET", `/api/webhooks/${c.json.id}`)).status === 200, 10_000, "b");
    const n = 40;
    for (let i = 0; i < n / 2; i++) {
      await publish(nc, "links.updated", linkUpdated("rep1", { version: 100 + i }));
      await publish(nc, "clicks.rep1", click("rep1"));
    }
    await waitFor(() => r.got.length >= n, 20_000, `${n} deliveries`);
    const ids = new Set(r.got.map((g) => g.headers["webhook-id"]));
    assert.equal(ids.size, n);
    assert.equal(r.got.length, n, "no duplicates");
    await a.stop();
    await b.stop();
  });

  test("events arriving while the database is down are delivered once it is back", async () => {
    const db = await freshDatabase();
    const name = new URL(db).pathname.slice(1);
    const s = await Service.start(serviceEnv(db));
    services.push(s);
    const r = await new Receiver().listen();
    receivers.push(r);
    const c = await api(s.base, key, "POST", "/api/webhooks", { url: r.url, events: ["link.updated"], codes: ["dbdown1"] });
    assert.equal(c.status, 201);
    const admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
    try {
      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS false`);
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name]);
      await publish(nc, "links.updated", linkUpdated("dbdown1", { version: 7 }));
      await waitFor(() => s.lines.some((l) => l.includes("could not store")), 10_000, "a nak while the database is down");
      await waitFor(async () => (await api(s.base, null, "GET", "/readyz")).status === 503, 10_000, "not ready");
      assert.equal(r.got.length, 0);
    } finally {
      await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
      await admin.end();
    }
    const got = await waitFor(() => r.got[0], 30_000, "the delivery after the outage");
    assert.equal(JSON.parse(got.body).data.version, 7);
    await waitFor(async () => (await api(s.base, null, "GET", "/readyz")).status === 200, 10_000, "ready again");
    assert.equal(s.proc.exitCode, null, "the same process lived through the outage");
    assert.ok(!s.logs().includes("Unhandled"), s.logs());
    // No dead letter for a transient failure.
    const jsm = await jetstreamManager(nc);
    const letter = await jsm.streams.getMessage("DLQ", { last_by_subj: "dlq.LINKS.webhooks-links" }).catch(() => null);
    assert.ok(!letter || !letter.string().includes('"dbdown1"'));
    await s.stop();
  });
});
