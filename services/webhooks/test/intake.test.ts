// Intake from JetStream: the clicks consumer's lifecycle, dead letters, matching.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { Receiver, SKIP, Service, api, click, freshDatabase, linkUpdated, natsConnect, publish, putKey, serviceEnv, waitFor } from "./helpers.ts";

describe("intake", { skip: SKIP }, () => {
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let svc: Service;
  let key: string;
  const receivers: Receiver[] = [];
  const ep = (m: string, p: string, b?: unknown) => api(svc.base, key, m, `/api/webhooks${p}`, b);
  const clicksConsumer = async () => {
    try {
      await jsm.consumers.info("CLICKS", "webhooks-clicks");
      return true;
    } catch {
      return false;
    }
  };

  before(async () => {
    nc = await natsConnect();
    jsm = await jetstreamManager(nc);
    key = await putKey(nc, "wh-test-intake", ["webhooks"]);
    svc = await Service.start(serviceEnv(await freshDatabase()));
    await waitFor(async () => (await ep("GET", "")).status === 200, 10_000, "the key");
  });
  after(async () => {
    await svc?.stop();
    for (const r of receivers) await r.close();
    await nc?.close();
  });

  test("the links consumer exists, durable, on links.>", async () => {
    const info = await jsm.consumers.info("LINKS", "webhooks-links");
    assert.equal(info.config.filter_subject, "links.>");
    assert.equal(info.config.ack_policy, "explicit");
    assert.equal(info.config.durable_name, "webhooks-links");
  });

  test("the clicks consumer exists only while an enabled endpoint wants link.clicked", async () => {
    assert.equal(await clicksConsumer(), false, "no endpoint: no clicks consumer");
    const a = await ep("POST", "", { url: "http://127.0.0.1:9/a", events: ["link.updated"] });
    assert.equal(await clicksConsumer(), false, "an endpoint without link.clicked: none");
    const b = await ep("POST", "", { url: "http://127.0.0.1:9/b", events: ["link.clicked"] });
    assert.equal(await clicksConsumer(), true, "created with the endpoint");
    const info = await jsm.consumers.info("CLICKS", "webhooks-clicks");
    assert.equal(info.config.filter_subject, "clicks.>");
    assert.equal(info.config.deliver_policy, "new");
    await ep("PATCH", `/${b.json.id}`, { enabled: false });
    assert.equal(await clicksConsumer(), false, "disabled: deleted");
    await ep("PATCH", `/${b.json.id}`, { enabled: true });
    assert.equal(await clicksConsumer(), true);
    await ep("PATCH", `/${a.json.id}`, { events: ["link.clicked", "link.updated"] });
    await ep("DELETE", `/${b.json.id}`);
    assert.equal(await clicksConsumer(), true, "another endpoint still wants clicks");
    await ep("DELETE", `/${a.json.id}`);
    assert.equal(await clicksConsumer(), false, "none left: deleted");
    // Reconciled on start too: a consumer left behind is deleted.
    await jsm.consumers.add("CLICKS", { durable_name: "webhooks-clicks", filter_subject: "clicks.>", ack_policy: "explicit" as never });
    await svc.stop();
    svc = await Service.start({ ...svc.env });
    assert.equal(await clicksConsumer(), false);
  });

  test("an invalid event is dead-lettered with the DLQ headers, and the next one still flows", async () => {
    const r = await new Receiver().listen();
    receivers.push(r);
    await ep("POST", "", { url: r.url, events: ["link.updated"], codes: ["dlq1"] });
    const badId = await publish(nc, "links.updated", { code: "dlq1", url: 42 }, "req-dlq-1");
    const letter = await waitFor(async () => {
      try {
        const m = await jsm.streams.getMessage("DLQ", { last_by_subj: "dlq.LINKS.webhooks-links" });
        return m?.header.get("Linkflow-Original-Msg-Id") === badId ? m : null;
      } catch {
        return null;
      }
    }, 10_000, "the dead letter");
    const h = letter!.header;
    assert.equal(letter!.json<{ url: number }>().url, 42, "payload unchanged");
    assert.equal(h.get("Linkflow-Original-Subject"), "links.updated");
    const seq = Number(h.get("Linkflow-Stream-Seq"));
    assert.ok(seq > 0);
    assert.equal(h.get("Nats-Msg-Id"), `webhooks-links:${seq}`);
    assert.equal(h.get("Linkflow-Original-Msg-Id"), badId);
    assert.equal(h.get("X-Request-Id"), "req-dlq-1");
    assert.ok(h.get("Linkflow-Enqueued-At"));
    assert.equal(h.get("Linkflow-Attempts"), "1");
    assert.match(h.get("Linkflow-Error"), /schema/);
    assert.ok(!h.get("Linkflow-Error").includes("\n"));
    for (const name of ["Linkflow-First-Failed-At", "Linkflow-Failed-At"]) assert.ok(!Number.isNaN(Date.parse(h.get(name))), name);
    const original = await jsm.streams.getMessage("LINKS", { seq });
    assert.equal(original!.header.get("Nats-Msg-Id"), badId);
    await publish(nc, "links.updated", linkUpdated("dlq1"));
    await waitFor(() => r.got[0], 10_000, "the valid event after the bad one");
    assert.equal(r.got.length, 1);
  });

  test("link.created, link.deleted, and code/domain filters", async () => {
    const all = await new Receiver().listen();
    const onlyB = await new Receiver().listen();
    const otherDomain = await new Receiver().listen();
    const tagged = await new Receiver().listen();
    receivers.push(all, onlyB, otherDomain, tagged);
    const events = ["link.created", "link.deleted"];
    await ep("POST", "", { url: all.url, events });
    await ep("POST", "", { url: onlyB.url, events, codes: ["fltB"] });
    await ep("POST", "", { url: otherDomain.url, events, domains: ["links.example"] });
    await ep("POST", "", { url: tagged.url, events, tags: ["vip"] });
    const created = (code: string, extra = {}) => ({ code, url: `https://e.com/${code}`, created_at: new Date().toISOString(), tags: [], ...extra });
    await publish(nc, "links.created", created("fltA"));
    await publish(nc, "links.created", created("fltB", { tags: ["vip"] }));
    await publish(nc, "links.created", created("fltC", { domain: "links.example" }));
    await publish(nc, "links.deleted", { code: "fltB", version: 2, deleted_at: new Date().toISOString() });
    await waitFor(() => all.got.length >= 4, 10_000, "all four at the unfiltered endpoint");
    await waitFor(() => onlyB.got.length >= 2 && otherDomain.got.length >= 1 && tagged.got.length >= 2, 10_000, "the filtered ones");
    const kinds = (r: Receiver) => r.got.map((g) => { const b = JSON.parse(g.body); return `${b.type}:${b.data.code}`; }).sort();
    assert.deepEqual(kinds(all), ["link.created:fltA", "link.created:fltB", "link.created:fltC", "link.deleted:fltB"]);
    assert.deepEqual(kinds(onlyB), ["link.created:fltB", "link.deleted:fltB"]);
    assert.deepEqual(kinds(otherDomain), ["link.created:fltC"]);
    // A deletion carries no tags: the link's last known tags decide.
    assert.deepEqual(kinds(tagged), ["link.created:fltB", "link.deleted:fltB"]);
  });

  test("clicks flow once the consumer exists", async () => {
    const r = await new Receiver().listen();
    receivers.push(r);
    await ep("POST", "", { url: r.url, events: ["link.clicked"], codes: ["clk1"] });
    const c = click("clk1");
    await publish(nc, "clicks.clk1", c, "req-click-1");
    const got = await waitFor(() => r.got[0], 10_000, "the click");
    const body = JSON.parse(got.body);
    assert.equal(body.type, "link.clicked");
    assert.deepEqual(body.data, c);
    assert.equal(body.timestamp, c.ts);
  });
});
