// redirects.busy: while a gateway says it needs the CPU, the intake and the deliverer
// hold off (within the yield lag) and catch up after; malformed signals are ignored.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { Receiver, SKIP, Service, api, click, freshDatabase, natsConnect, publish, putKey, serviceEnv, waitFor } from "./helpers.ts";

const HOLD_S = 1;

/** A gateway saying redirects.busy every quarter second, as services/link/load.py does. */
class BusyGateway {
  lastAt = 0;
  private timer: NodeJS.Timeout;
  constructor(nc: NatsConnection, extra: Array<string> = []) {
    const say = () => {
      for (const raw of extra) nc.publish("redirects.busy", raw);
      nc.publish("redirects.busy", JSON.stringify({ gateway: "127.0.0.1:9", load: 0.97, hold: HOLD_S }));
      this.lastAt = Date.now();
    };
    say();
    this.timer = setInterval(say, 250);
  }
  /** Stops saying it; returns when the last signal was sent. */
  stop(): number {
    clearInterval(this.timer);
    return this.lastAt;
  }
}

async function yielding(base: string, who: string): Promise<boolean> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return new RegExp(`^linkflow_worker_yielding\\{consumer="${who}"\\} 1$`, "m").test(text);
}

describe("redirects.busy", { skip: SKIP }, () => {
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let key: string;
  const receivers: Receiver[] = [];
  const services: Service[] = [];

  const start = async (extra: Record<string, string> = {}) => {
    const svc = await Service.start(serviceEnv(await freshDatabase(), extra));
    services.push(svc);
    await waitFor(async () => (await api(svc.base, key, "GET", "/api/webhooks")).status === 200, 10_000, "the key");
    return svc;
  };
  const endpoint = async (svc: Service, codes: string[]) => {
    const r = await new Receiver().listen();
    receivers.push(r);
    const made = await api(svc.base, key, "POST", "/api/webhooks", { url: r.url, events: ["link.clicked"], codes });
    assert.equal(made.status, 201);
    await waitFor(async () => {
      try {
        await jsm.consumers.info("CLICKS", "webhooks-clicks");
        return true;
      } catch {
        return false;
      }
    }, 10_000, "the clicks consumer");
    return { r, id: (made.json as { id: string }).id };
  };

  before(async () => {
    nc = await natsConnect();
    jsm = await jetstreamManager(nc);
    key = await putKey(nc, "wh-test-busy", ["webhooks"]);
  });
  after(async () => {
    for (const s of services) await s.stop();
    for (const r of receivers) await r.close();
    await nc?.close();
  });

  test("a click waits while a gateway is busy, and is delivered once its hold ends", async () => {
    const svc = await start();
    const { r } = await endpoint(svc, ["busyA"]);
    const gw = new BusyGateway(nc);
    await publish(nc, "clicks.busyA", click("busyA"));
    await waitFor(() => yielding(svc.base, "webhooks-clicks"), 10_000, "the intake to hold off");
    assert.equal(r.got.length, 0, "nothing delivered while the gateway is busy");
    const last = gw.stop();
    const got = await waitFor(() => r.got[0], 15_000, "the click after the hold");
    // The signal holds HOLD_S after the last one; a little slack for the timers.
    assert.ok(got.at >= last + HOLD_S * 1000 - 100, `delivered ${got.at - last} ms after the last signal`);
    await waitFor(async () => !(await yielding(svc.base, "webhooks-clicks")), 5000, "the hold to end");
    await svc.stop();
  });

  test("a delivery already due waits too (the deliverer holds), then goes", async () => {
    const svc = await start();
    const { r, id } = await endpoint(svc, ["busyB"]);
    const gw = new BusyGateway(nc);
    // Wait until the deliverer has seen the signal: its loop polls once a second.
    await waitFor(async () => {
      await api(svc.base, key, "POST", `/api/webhooks/${id}/test`);
      return yielding(svc.base, "webhooks-deliveries");
    }, 10_000, "the deliverer to hold off");
    assert.equal(r.got.length, 0, "no test event delivered while the gateway is busy");
    const last = gw.stop();
    await waitFor(() => r.got[0], 15_000, "the test event after the hold");
    assert.ok(r.got[0].at >= last + HOLD_S * 1000 - 100, `delivered ${r.got[0].at - last} ms after the last signal`);
    assert.equal(JSON.parse(r.got[0].body).type, "webhook.test");
    await svc.stop();
  });

  test("a gateway busy for longer than the yield lag holds nothing past it; malformed signals are ignored", async () => {
    const svc = await start({ LINKFLOW_WEBHOOKS_YIELD_LAG: "1s" });
    const { r } = await endpoint(svc, ["busyC"]);
    const gw = new BusyGateway(nc, ["not json", JSON.stringify({ gateway: "x" }), JSON.stringify({ gateway: "y", load: 1, hold: 3600 })]);
    try {
      const sent = Date.now();
      await publish(nc, "clicks.busyC", click("busyC"));
      const got = await waitFor(() => r.got[0], 10_000, "the click within the yield lag");
      assert.ok(got.at - sent >= 900, `held ${got.at - sent} ms (the lag is 1 s)`);
      assert.ok(svc.lines.some((l) => l.includes("ignoring a malformed redirects.busy message")));
      assert.equal(svc.lines.filter((l) => l.includes("ignoring a malformed")).length, 1, "said once");
    } finally {
      gw.stop();
    }
    await svc.stop();
  });
});
