// Intake: bus events → one delivery per matching endpoint, in one transaction per batch.
import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import { Bus, CLICKS, CLICKS_CONSUMER, LINKS, LINKS_CONSUMER, header } from "./bus.ts";
import { eventTypeOf, factsOf, validators, type EventType } from "./contracts.ts";
import type { BusyGateways } from "./busy.ts";
import { matches } from "./filters.ts";
import { intakeDelayMs } from "./backoff.ts";
import { logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import type { NewDelivery, Store } from "./store.ts";

const log = logger("intake");
const utf8 = new TextDecoder("utf-8", { fatal: true });
/** A partial batch waits at most this long for more messages. */
const FLUSH_MS = 15;

interface Parsed {
  m: JsMsg;
  type: EventType;
  raw: string;
  payload: Record<string, unknown>;
  eventId: string;
  requestId: string | null;
}

/** Why a message can never be handled, or its parsed form. */
export function parse(m: { subject: string; data: Uint8Array; seq: number; headers?: JsMsg["headers"]; info: { stream: string } }): Parsed | string {
  const type = eventTypeOf(m.subject);
  if (!type) return `unexpected subject ${m.subject}`;
  let raw: string;
  try {
    raw = utf8.decode(m.data).trim();
  } catch {
    return "payload is not UTF-8";
  }
  let payload: unknown;
  try {
    payload = JSON.parse(raw);
  } catch (e) {
    return `payload is not JSON: ${(e as Error).message}`;
  }
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return "payload is not a JSON object";
  const v = validators[type];
  if (!v(payload)) return `payload fails ${type} schema: ${v.errorsText()}`;
  if (holdsNul(payload)) return "a text field holds U+0000";
  const msgId = header(m.headers, "Nats-Msg-Id") ?? `seq.${m.seq}`;
  return {
    m: m as JsMsg,
    type,
    raw,
    payload: payload as Record<string, unknown>,
    eventId: `${m.info.stream}/${msgId}`,
    requestId: header(m.headers, "X-Request-Id"),
  };
}

function holdsNul(v: unknown): boolean {
  if (typeof v === "string") return v.includes("\u0000");
  if (Array.isArray(v)) return v.some(holdsNul);
  if (v && typeof v === "object") return Object.entries(v).some(([k, x]) => k.includes("\u0000") || holdsNul(x));
  return false;
}

/** A database error that retrying cannot cure (SQLSTATE classes 22 and 23, but a
 *  foreign key race with an endpoint being deleted, which passes on the next try). */
function refusedByDatabase(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === "string" && (code.startsWith("22") || code.startsWith("23")) && code !== "23503";
}

const TIME_FIELD: Record<EventType, string> = {
  "link.created": "created_at",
  "link.updated": "updated_at",
  "link.deleted": "deleted_at",
  "link.clicked": "ts",
};

/** The delivery body, built once: retries send these exact bytes. `data` is the payload as received. */
export function buildBody(type: string, raw: string, when: Date): string {
  return `{"type":${JSON.stringify(type)},"timestamp":${JSON.stringify(when.toISOString())},"data":${raw}}`;
}

function eventTime(p: Parsed): Date {
  const t = p.payload[TIME_FIELD[p.type]];
  const d = typeof t === "string" ? new Date(t) : null;
  if (d && !Number.isNaN(d.getTime())) return d;
  const ns = p.m.info?.timestampNanos;
  return ns ? new Date(Math.floor(ns / 1e6)) : new Date();
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

export class Intake {
  readonly bus: Bus;
  readonly store: Store;
  readonly bulk: number;
  readonly defaultDomain: string;
  readonly metrics: Metrics;
  readonly onNew: () => void;
  readonly busy: BusyGateways | null;
  private stopping = new AbortController();
  private loops = new Map<string, { msgs: ConsumerMessages | null; done: Promise<void> }>();
  private failures = 0;
  dbDown = false;
  clicksWanted = false;

  constructor(opts: { bus: Bus; store: Store; bulk: number; defaultDomain: string; metrics: Metrics; onNew: () => void; busy?: BusyGateways }) {
    this.bus = opts.bus;
    this.store = opts.store;
    this.bulk = opts.bulk;
    this.defaultDomain = opts.defaultDomain;
    this.metrics = opts.metrics;
    this.onNew = opts.onNew;
    this.busy = opts.busy ?? null;
  }

  async start(): Promise<void> {
    if (await this.bus.ensureConsumer(LINKS, LINKS_CONSUMER, "links.>")) {
      log.info(`created consumer ${LINKS}/${LINKS_CONSUMER}`);
    }
    this.startLoop(LINKS, LINKS_CONSUMER, false);
    await this.reconcileClicks();
  }

  /** Makes the clicks consumer exist exactly while an enabled endpoint wants link.clicked.
   *  Serialised across replicas by a PostgreSQL advisory lock, reading the committed endpoints. */
  async reconcileClicks(): Promise<void> {
    // The links consumer too, should someone have deleted it.
    if (await this.bus.ensureConsumer(LINKS, LINKS_CONSUMER, "links.>")) {
      log.warn(`consumer ${LINKS}/${LINKS_CONSUMER} was missing: created again`);
    }
    const wanted = await this.store.withClicksLock(async (c) => {
      const want = await this.store.anyEndpointWants("link.clicked", c);
      if (want) {
        if (await this.bus.ensureConsumer(CLICKS, CLICKS_CONSUMER, "clicks.>")) {
          log.info(`created consumer ${CLICKS}/${CLICKS_CONSUMER}: an endpoint wants link.clicked`);
        }
      } else if (await this.bus.deleteConsumer(CLICKS, CLICKS_CONSUMER)) {
        log.info(`deleted consumer ${CLICKS}/${CLICKS_CONSUMER}: no endpoint wants link.clicked`);
      }
      return want;
    });
    this.clicksWanted = wanted;
    if (wanted && !this.loops.has(CLICKS_CONSUMER) && !this.stopping.signal.aborted) {
      this.startLoop(CLICKS, CLICKS_CONSUMER, true);
    } else if (!wanted) {
      this.loops.get(CLICKS_CONSUMER)?.msgs?.stop();
    }
  }

  private startLoop(stream: string, name: string, abortOnMissing: boolean): void {
    const entry: { msgs: ConsumerMessages | null; done: Promise<void> } = { msgs: null, done: Promise.resolve() };
    this.loops.set(name, entry);
    entry.done = (async () => {
      try {
        while (!this.stopping.signal.aborted) {
          try {
            const consumer = await this.bus.js.consumers.get(stream, name);
            const msgs = await consumer.consume({ max_messages: this.bulk, abort_on_missing_resource: abortOnMissing });
            entry.msgs = msgs;
            if (this.stopping.signal.aborted) msgs.stop();
            // A batch is handed over when full, when nothing more is queued, or at the
            // latest FLUSH_MS after its first message. getPending() alone is not enough:
            // it also counts the consumer's pull-request callbacks, and stays above 0
            // through a burst's last message. Batches are handled one at a time, in order;
            // a full batch waits for the one before it (no unbounded reading ahead).
            let batch: JsMsg[] = [];
            let timer: NodeJS.Timeout | null = null;
            let inHand: Promise<void> = Promise.resolve();
            const handOver = (): Promise<void> => {
              if (timer) {
                clearTimeout(timer);
                timer = null;
              }
              if (batch.length === 0) return inHand;
              const b = batch;
              batch = [];
              // Not acked on a failure: the server redelivers after the ack wait.
              inHand = inHand
                .then(() => this.yieldTurn(name, b))
                .then(() => this.handle(name, b))
                .catch((e) => log.warn(`handling ${b.length} events of ${stream}/${name} failed; they come again`, { error: e as Error }));
              return inHand;
            };
            try {
              for await (const m of msgs) {
                batch.push(m);
                if (batch.length >= this.bulk || msgs.getPending() === 0) await handOver();
                else timer ??= setTimeout(() => void handOver(), FLUSH_MS);
                if (this.stopping.signal.aborted) break;
              }
            } finally {
              await handOver();
            }
            entry.msgs = null;
            if (abortOnMissing) return; // the clicks consumer went away: reconcile restarts it if wanted
          } catch (e) {
            if (this.stopping.signal.aborted) return;
            if (abortOnMissing && !this.clicksWanted) return;
            log.warn(`consuming ${stream}/${name} failed; retrying`, { error: e as Error });
            await sleep(1000, this.stopping.signal);
          }
        }
      } finally {
        if (this.loops.get(name) === entry) this.loops.delete(name);
      }
    })();
  }

  /** While a gateway says redirects.busy, a batch waits (and the consumer with it: the loop
   *  reads no further than the next batch), within the yield lag, counted from when its
   *  first event was stored. The lag is below the ack wait: a held batch is not redelivered. */
  private async yieldTurn(name: string, batch: JsMsg[]): Promise<void> {
    if (!this.busy?.busy) return;
    const stored = batch[0]?.time?.getTime();
    await this.busy.turn(name, Number.isFinite(stored) ? stored : Date.now(), this.stopping.signal);
  }

  /** One batch: dead-letter what can never work, insert deliveries for the rest, ack. */
  async handle(consumer: string, batch: JsMsg[]): Promise<void> {
    const good: Parsed[] = [];
    for (const m of batch) {
      const p = parse(m);
      if (typeof p !== "string") {
        good.push(p);
        continue;
      }
      const requestId = header(m.headers, "X-Request-Id");
      try {
        await this.bus.deadLetter(m, consumer, p);
        m.term(p.slice(0, 200));
        this.metrics.intake.inc({ consumer, outcome: "dead_letter" });
        log.warn(`dead-lettered ${m.subject} #${m.seq}: ${p}`, { request_id: requestId, consumer });
      } catch (e) {
        m.nak(5000);
        this.metrics.intake.inc({ consumer, outcome: "nak" });
        log.warn(`could not dead-letter ${m.subject} #${m.seq}; nak`, { request_id: requestId, error: e as Error });
      }
    }
    if (good.length === 0) return;
    let inserted = 0;
    try {
      inserted = await this.store.tx(async (c) => {
        const endpoints = await this.store.enabledEndpoints(c);
        // Tags of links as events tell them, for tag filters on clicks.
        const tagRows = good
          .filter((p) => p.type !== "link.clicked")
          .map((p) => ({
            domain: typeof p.payload.domain === "string" ? p.payload.domain.toLowerCase() : "",
            code: String(p.payload.code),
            tags: Array.isArray(p.payload.tags) ? (p.payload.tags as string[]) : [],
            version: typeof p.payload.version === "number" ? p.payload.version : 0,
            deleted: p.type === "link.deleted",
            created: p.type === "link.created",
          }));
        await this.store.applyLinkTags(c, tagRows);
        // Clicks and deletions carry no tags: the link's, as its events told them.
        const tagless = good.filter((p) => p.type === "link.clicked" || p.type === "link.deleted");
        let knownTags = new Map<string, string[]>();
        if (tagless.length && endpoints.some((e) => e.tags.length > 0 && tagless.some((p) => e.events.includes(p.type)))) {
          knownTags = await this.store.linkTags(
            c,
            tagless.map((p) => ({ domain: typeof p.payload.domain === "string" ? p.payload.domain.toLowerCase() : "", code: String(p.payload.code) })),
          );
        }
        const rows: NewDelivery[] = [];
        for (const p of good) {
          const facts = factsOf(p.payload);
          const tags =
            p.type === "link.clicked" || p.type === "link.deleted"
              ? knownTags.get(`${facts.domain ?? ""}\u0000${facts.code}`) ?? null
              : facts.tags ?? [];
          let body: string | null = null;
          for (const e of endpoints) {
            if (!matches(e, p.type, facts, tags, this.defaultDomain)) continue;
            body ??= buildBody(p.type, p.raw, eventTime(p));
            rows.push({ endpointId: e.id, eventId: p.eventId, eventType: p.type, body, requestId: p.requestId });
          }
        }
        return this.store.insertDeliveries(c, rows);
      });
    } catch (e) {
      if (refusedByDatabase(e)) {
        if (good.length > 1) {
          // Find the message the database refuses: one by one; the others are stored.
          for (const p of good) await this.handle(consumer, [p.m]);
          return;
        }
        const p = good[0];
        const why = `the database refuses it: ${(e as Error).message}`;
        try {
          await this.bus.deadLetter(p.m, consumer, why);
          p.m.term(why.slice(0, 200));
          this.metrics.intake.inc({ consumer, outcome: "dead_letter" });
          log.warn(`dead-lettered ${p.m.subject} #${p.m.seq}: ${why}`, { request_id: p.requestId, consumer });
        } catch {
          p.m.nak(5000);
        }
        return;
      }
      this.failures += 1;
      this.dbDown = true;
      const delay = intakeDelayMs(this.failures);
      for (const p of good) p.m.nak(delay);
      this.metrics.intake.inc({ consumer, outcome: "nak" }, good.length);
      log.warn(`could not store ${good.length} events; nak, again in ${delay} ms`, {
        consumer,
        error: e as Error,
        request_id: good[0].requestId,
      });
      await sleep(delay, this.stopping.signal);
      return;
    }
    this.failures = 0;
    this.dbDown = false;
    for (const p of good) {
      p.m.ack();
      log.debug(`${p.type} ${p.eventId} taken`, { request_id: p.requestId, consumer });
    }
    this.metrics.intake.inc({ consumer, outcome: "ack" }, good.length);
    if (inserted > 0) this.onNew();
  }

  /** Stops fetching; batches being handled finish (and are acked). */
  async stop(): Promise<void> {
    this.stopping.abort();
    for (const l of this.loops.values()) l.msgs?.stop();
    await Promise.all([...this.loops.values()].map((l) => l.done));
  }

  running(name: string): boolean {
    return this.loops.has(name);
  }
}
