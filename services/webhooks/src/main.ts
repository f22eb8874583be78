// The webhooks service: settings, then NATS, PostgreSQL, intake, delivery and the API.
import type { NatsConnection } from "@nats-io/transport-node";
import { buildApi } from "./api.ts";
import { BusyGateways } from "./busy.ts";
import { Bus, CLICKS, CLICKS_CONSUMER, LINKS, LINKS_CONSUMER, connectNats } from "./bus.ts";
import { Deliverer, Sender } from "./deliver.ts";
import { Intake } from "./intake.ts";
import { KeyRing } from "./keys.ts";
import { logger, setLogLevel } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { SettingsError, loadSettings, type Settings } from "./settings.ts";
import { Store } from "./store.ts";

const log = logger("main");
const RETENTION_DAYS = 7;

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}

async function retry<T>(what: string, fn: () => Promise<T>, stopping: () => boolean): Promise<T | null> {
  for (let i = 0; !stopping(); i++) {
    try {
      return await fn();
    } catch (e) {
      log.warn(`${what} failed; retrying`, { error: e as Error });
      await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** i)));
    }
  }
  return null;
}

export async function run(settings: Settings): Promise<void> {
  setLogLevel(settings.logLevel);
  if (settings.authOff) log.warn("LINKFLOW_AUTH=off: API keys are not checked; anyone who reaches this port can manage webhooks");
  if (settings.allowPrivate) log.warn("LINKFLOW_WEBHOOKS_ALLOW_PRIVATE=true: deliveries may reach private and loopback addresses");
  if (settings.retryScale !== 1) log.warn(`LINKFLOW_WEBHOOKS_RETRY_SCALE=${settings.retryScale}: retry delays are scaled (for tests only)`);

  let stopping = false;
  const metrics = new Metrics();
  const store = new Store(settings.databaseUrl);
  const keys = new KeyRing();
  const busy = new BusyGateways(settings.yieldLagMs, metrics.yielding);
  let nc: NatsConnection | null = null;
  let natsConnected = false;
  let intake: Intake | null = null;
  let deliverer: Deliverer | null = null;
  let dbReady = false;

  const ready = async (): Promise<string | null> => {
    if (!nc || !natsConnected) return "NATS is not connected";
    if (!dbReady) return "the database is not ready";
    try {
      await Promise.race([store.ping(), new Promise((_, rej) => setTimeout(() => rej(new Error("timeout")), 2000))]);
    } catch {
      return "the database does not answer";
    }
    if (!intake) return "not started yet";
    if (intake.dbDown) return "the database refuses events";
    try {
      const bus = await Bus.open(nc);
      if (!(await bus.consumerExists(LINKS, LINKS_CONSUMER))) return `consumer ${LINKS}/${LINKS_CONSUMER} is missing`;
      if (intake.clicksWanted && !(await bus.consumerExists(CLICKS, CLICKS_CONSUMER))) return `consumer ${CLICKS}/${CLICKS_CONSUMER} is missing`;
    } catch (e) {
      return `JetStream does not answer: ${(e as Error).message}`;
    }
    if (!settings.authOff && !keys.loaded) return "API keys are not loaded";
    return null;
  };

  const reconcile = async () => {
    if (!intake) return;
    try {
      await intake.reconcileClicks();
    } catch (e) {
      log.warn("could not reconcile the clicks consumer", { error: e as Error });
    }
  };

  const app = await buildApi({
    settings,
    store,
    keys,
    metrics,
    ready,
    endpointsChanged: async () => {
      deliverer?.forget(); // what it claimed ahead is claimed again as the endpoints now are
      await reconcile();
    },
    wake: () => deliverer?.wake(),
  });
  await app.listen({ host: settings.host, port: settings.port });
  log.info(`listening on http://${settings.host}:${(app.server.address() as { port: number }).port}`);

  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: shutting down`);
    const hard = setTimeout(() => {
      log.error("shutdown took over 25 s; exiting");
      process.exit(1);
    }, 25_000);
    hard.unref();
    try {
      await app.close();
      await intake?.stop();
      await deliverer?.stop();
      keys.stop();
      busy.stop();
      if (nc && !nc.isClosed()) await nc.drain();
      await store.close();
    } catch (e) {
      log.error("error while shutting down", { error: e as Error });
    }
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  log.info(`connecting to NATS at ${settings.nats.servers.join(",")}`);
  nc = await retry(`connecting to NATS at ${settings.nats.servers.join(",")}`, () => connectNats(settings.nats), () => stopping);
  if (!nc) return;
  natsConnected = true;
  void (async () => {
    for await (const s of nc!.status()) {
      if (s.type === "disconnect") {
        natsConnected = false;
        log.warn("NATS disconnected");
      } else if (s.type === "reconnect") {
        natsConnected = true;
        log.info("NATS reconnected");
      } else if (s.type === "error") {
        // Permission violations and the like: say so, they mean a misconfigured NATS user.
        log.error(`NATS error: ${(s as { error?: Error }).error?.message ?? "unknown"}`);
      }
    }
  })();
  const bus = await Bus.open(nc);
  void keys.watch(nc);
  busy.start(nc);

  if (!(await retry(`preparing the database at ${redact(settings.databaseUrl)}`, () => store.migrate().then(() => true), () => stopping))) return;
  dbReady = true;

  const sender = new Sender({ allowPrivate: settings.allowPrivate, allowHttp: settings.allowHttp, perEndpoint: settings.perEndpointConcurrency });
  deliverer = new Deliverer({
    store,
    sender,
    metrics,
    perEndpoint: settings.perEndpointConcurrency,
    global: settings.globalConcurrency,
    retryScale: settings.retryScale,
    busy,
  });
  deliverer.onDisabled = (ids) => {
    deliverer?.forget(ids);
    void reconcile();
  };
  intake = new Intake({ bus, store, bulk: settings.bulkLimit, defaultDomain: settings.defaultDomain, metrics, onNew: () => deliverer?.wake(), busy });
  if (!(await retry("creating the consumers", () => intake!.start().then(() => true), () => stopping))) return;
  deliverer.start();
  log.info("ready: taking events and delivering");

  // Another replica may change endpoints: reconcile the clicks consumer now and then.
  const reconcileTimer = setInterval(() => void reconcile(), 5000);
  reconcileTimer.unref();
  const sweep = async () => {
    try {
      const n = await store.sweep(RETENTION_DAYS);
      if (n) log.info(`deleted ${n} deliveries older than ${RETENTION_DAYS} days`);
    } catch (e) {
      log.warn("retention sweep failed", { error: e as Error });
    }
  };
  void sweep();
  setInterval(() => void sweep(), 10 * 60_000).unref();
}

if (import.meta.main) {
  let settings: Settings;
  try {
    settings = loadSettings();
  } catch (e) {
    if (e instanceof SettingsError) {
      process.stderr.write(`webhooks: bad setting: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  run(settings).catch((e) => {
    log.error(`fatal: ${(e as Error).message}`, { error: e as Error });
    process.exit(1);
  });
}
