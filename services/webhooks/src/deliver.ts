// Delivery: claim due deliveries, POST them signed, write results back.
import http from "node:http";
import https from "node:https";
import dns from "node:dns";
import { isIP, type LookupFunction } from "node:net";
import { Webhook } from "standardwebhooks";
import { refusedReason, hostOf } from "./address.ts";
import type { BusyGateways } from "./busy.ts";
import { retryDelayMs, MAX_ATTEMPTS } from "./backoff.ts";
import { logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import type { AttemptResult, Claimed, Store } from "./store.ts";

const log = logger("deliver");
export const TIMEOUT_MS = 15_000;
const LEASE_MS = 30_000; // longer than an attempt (15 s) and its write-back
const POLL_MS = 1000;
/** Claimed ahead per endpoint: up to this many times its concurrency wait in a local
 *  queue (one claim serves many attempts); refilled when fewer than its concurrency wait. */
const AHEAD = 4;
/** A claimed delivery not started within this long after its claim is given back: its
 *  attempt (TIMEOUT_MS) and write-back must end well inside the lease. Keeps a hanging
 *  endpoint's queue from outliving its leases. */
const START_WITHIN_MS = LEASE_MS - TIMEOUT_MS - 5_000;
const MAX_RESPONSE_BYTES = 64 * 1024;

export class RefusedAddress extends Error {}

/** A dns lookup that only answers addresses a delivery may connect to. */
export function guardedLookup(allowPrivate: boolean): LookupFunction {
  return ((hostname: string, options: dns.LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, "", 0);
      const list = addresses as dns.LookupAddress[];
      const allowed = allowPrivate ? list : list.filter((a) => refusedReason(a.address) === null);
      if (allowed.length === 0) {
        const first = list[0];
        const why = first ? refusedReason(first.address) : "no address";
        const e = new RefusedAddress(`refused: ${hostname} resolves to a ${why} address (${first?.address ?? "none"})`) as NodeJS.ErrnoException;
        e.code = "EREFUSEDADDRESS";
        return callback(e, "", 0);
      }
      if (options.all) callback(null, allowed);
      else callback(null, allowed[0].address, allowed[0].family);
    });
  }) as LookupFunction;
}

/** Signs with the current secret, and with the previous one during a rotation's overlap. */
export function sign(id: string, when: Date, body: string, secrets: string[]): string {
  return secrets.map((s) => new Webhook(s).sign(id, when, body)).join(" ");
}

export interface SendResult {
  ok: boolean;
  statusCode: number | null;
  error: string | null;
  refused: boolean;
  aborted?: boolean;
}

export class Sender {
  readonly allowPrivate: boolean;
  readonly allowHttp: boolean;
  readonly httpAgent: http.Agent;
  readonly httpsAgent: https.Agent;

  /** `perEndpoint`: deliveries in flight per endpoint; sockets per host follow it
   *  (twice as many, at least 8: endpoints may share a host). */
  constructor(opts: { allowPrivate: boolean; allowHttp: boolean; perEndpoint?: number }) {
    this.allowPrivate = opts.allowPrivate;
    this.allowHttp = opts.allowHttp;
    const lookup = guardedLookup(opts.allowPrivate);
    const maxSockets = Math.max(8, 2 * (opts.perEndpoint ?? 4));
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets, lookup });
    this.httpsAgent = new https.Agent({ keepAlive: true, maxSockets, lookup });
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  async send(url: string, headers: Record<string, string>, body: string, signal?: AbortSignal): Promise<SendResult> {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return { ok: false, statusCode: null, error: "invalid URL", refused: true };
    }
    if (u.protocol !== "https:" && !(this.allowHttp && u.protocol === "http:")) {
      return { ok: false, statusCode: null, error: `refused: ${u.protocol} URLs are not allowed`, refused: true };
    }
    const host = hostOf(u);
    if (!this.allowPrivate && isIP(host)) {
      const why = refusedReason(host);
      if (why) return { ok: false, statusCode: null, error: `refused: ${host} is a ${why} address`, refused: true };
    }
    const mod = u.protocol === "https:" ? https : http;
    const agent = u.protocol === "https:" ? this.httpsAgent : this.httpAgent;
    return new Promise<SendResult>((resolve) => {
      let settled = false;
      const done = (r: SendResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        // One signal serves every attempt: a listener left on it would be kept (with its
        // request) for the process's life, and each addEventListener scans those before it.
        signal?.removeEventListener("abort", onAbort);
        resolve(r);
      };
      const req = mod.request(
        u,
        {
          method: "POST",
          agent,
          headers: {
            ...headers,
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            "user-agent": "linkflow-webhooks/1",
          },
        },
        (res) => {
          const code = res.statusCode ?? 0;
          let seen = 0;
          res.on("data", (chunk: Buffer) => {
            seen += chunk.length;
            if (seen > MAX_RESPONSE_BYTES) res.destroy();
          });
          const finish = () => {
            if (code >= 200 && code < 300) done({ ok: true, statusCode: code, error: null, refused: false });
            else if (code >= 300 && code < 400) done({ ok: false, statusCode: code, error: `redirect (${code}) not followed`, refused: false });
            else done({ ok: false, statusCode: code, error: `HTTP ${code}`, refused: false });
          };
          res.on("end", finish);
          res.on("close", finish);
          res.on("error", finish);
        },
      );
      const timer = setTimeout(() => {
        req.destroy(new Error(`timed out after ${TIMEOUT_MS / 1000} s`));
      }, TIMEOUT_MS);
      const onAbort = () => {
        done({ ok: false, statusCode: null, error: "shutting down", refused: false, aborted: true });
        req.destroy();
      };
      if (signal?.aborted) onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      req.on("socket", (socket) => {
        const check = () => {
          // Defence in depth: the address really connected to.
          const addr = socket.remoteAddress;
          if (!this.allowPrivate && addr && refusedReason(addr)) {
            req.destroy(new RefusedAddress(`refused: connected to a ${refusedReason(addr)} address (${addr})`));
          }
        };
        if ((socket as { connecting?: boolean }).connecting) socket.once("connect", check);
        else check();
      });
      req.on("error", (e: NodeJS.ErrnoException) => {
        const refused = e instanceof RefusedAddress || e.code === "EREFUSEDADDRESS" || e.message.startsWith("refused:");
        done({ ok: false, statusCode: null, error: refused ? e.message : `${e.code ? e.code + ": " : ""}${e.message}`, refused });
      });
      req.end(body);
    });
  }
}

export class Deliverer {
  readonly store: Store;
  readonly sender: Sender;
  readonly metrics: Metrics;
  readonly perEndpoint: number;
  readonly global: number;
  readonly retryScale: number;
  readonly busy: BusyGateways | null;
  /** When the current hold began (ms): while a gateway stays busy, work resumes the yield lag after. */
  private holdSince: number | null = null;
  private halt = new AbortController();
  private inFlight = new Map<string, number>();
  private total = 0;
  /** Claimed, not yet started, per endpoint, with when each must start by (ms). */
  private queues = new Map<string, Array<{ d: Claimed; startBy: number }>>();
  private queued = 0;
  /** Endpoints whose last claim was filled: more may be due, refill at the low-water mark. */
  private more = new Set<string>();
  /** Claimed but dropped unstarted: leases to give back. */
  private toRelease: string[] = [];
  private results: AttemptResult[] = [];
  private flushing: Promise<void> | null = null;
  private stopped = false;
  private wakeUp: (() => void) | null = null;
  private woken = false;
  private refill = false;
  private abort = new AbortController();
  private abandoned: string[] = [];
  private loop: Promise<void> | null = null;
  private running = new Set<Promise<void>>();
  private flushTimer: NodeJS.Timeout | null = null;
  onDisabled: (ids: string[]) => void = () => undefined;

  constructor(opts: {
    store: Store;
    sender: Sender;
    metrics: Metrics;
    perEndpoint: number;
    global: number;
    retryScale: number;
    busy?: BusyGateways;
  }) {
    this.store = opts.store;
    this.sender = opts.sender;
    this.metrics = opts.metrics;
    this.perEndpoint = opts.perEndpoint;
    this.global = opts.global;
    this.retryScale = opts.retryScale;
    this.busy = opts.busy ?? null;
  }

  /** The oldest work in hand (ms): the oldest queued delivery's creation, or when the hold began. */
  private behindSince(): number {
    const now = Date.now();
    if (!this.busy?.busy) {
      this.holdSince = null;
      return now;
    }
    let t = (this.holdSince ??= now);
    for (const q of this.queues.values()) if (q.length) t = Math.min(t, q[0].d.created_at.getTime());
    return t;
  }

  /** Whether to start nothing new now: a gateway says redirects.busy, within the yield lag. */
  private holding(): boolean {
    return this.busy !== null && this.busy.holds(this.behindSince());
  }

  start(): void {
    this.loop = this.run();
  }

  /** New deliveries may be due (or endpoints changed): claim at once, from every endpoint. */
  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Endpoints changed (URL, filters, enabled, deleted): what was claimed ahead is given
   *  back and claimed again as the endpoints now are. */
  forget(endpointIds?: string[]): void {
    for (const [ep, q] of this.queues) {
      if (endpointIds && !endpointIds.includes(ep)) continue;
      for (const x of q) this.toRelease.push(x.d.id);
      this.queued -= q.length;
      this.queues.delete(ep);
      this.more.delete(ep);
    }
    this.wake();
  }

  private get queueCap(): number {
    return this.perEndpoint * AHEAD;
  }

  /** Some endpoint with more due has fewer than its concurrency waiting. */
  private wantsRefill(): boolean {
    if (this.queued >= this.global * AHEAD) return false;
    for (const ep of this.more) if ((this.queues.get(ep)?.length ?? 0) < this.perEndpoint) return true;
    return false;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      if (this.holding()) {
        // Attempts in flight finish; nothing new is claimed or started until the hold ends.
        await this.busy!.turn("webhooks-deliveries", this.behindSince(), this.halt.signal);
        this.pumpAll();
        continue;
      }
      const all = this.woken;
      this.woken = false;
      this.refill = false;
      this.dropStale();
      if (this.toRelease.length) {
        const ids = this.toRelease;
        this.toRelease = [];
        // Not given back (the database is down): the leases expire instead.
        await this.store.release(ids).catch((e) => log.warn(`could not give back ${ids.length} leases`, { error: e as Error }));
      }
      let fresh = false;
      let failed = false;
      const room = this.global * AHEAD - this.queued;
      if ((all || this.wantsRefill()) && room > 0 && !this.stopped) {
        // How many to claim of each endpoint: up to its queue's cap; on a refill only of
        // those that had more due (the others had none a moment ago: the next wake or poll).
        const asks = new Map<string, number>();
        for (const ep of new Set([...this.inFlight.keys(), ...this.queues.keys(), ...this.more])) {
          const q = this.queues.get(ep)?.length ?? 0;
          asks.set(ep, all || (this.more.has(ep) && q < this.perEndpoint) ? Math.max(0, this.queueCap - q) : 0);
        }
        const claimedAt = Date.now();
        try {
          const claimed = await this.store.claim(asks, all ? this.queueCap : 0, room, LEASE_MS);
          const got = new Map<string, number>();
          for (const d of claimed) {
            got.set(d.endpoint_id, (got.get(d.endpoint_id) ?? 0) + 1);
            let q = this.queues.get(d.endpoint_id);
            if (!q) this.queues.set(d.endpoint_id, (q = []));
            q.push({ d, startBy: claimedAt + START_WITHIN_MS });
            this.queued += 1;
          }
          for (const [ep, n] of got) {
            if (n >= (asks.get(ep) ?? (all ? this.queueCap : 0))) this.more.add(ep);
            else this.more.delete(ep);
          }
          for (const [ep, ask] of asks) if (ask > 0 && !got.has(ep)) this.more.delete(ep);
          fresh = claimed.length > 0 && claimed.length >= room; // stopped by the overall cap: more may be due
        } catch (e) {
          log.warn("could not claim deliveries", { error: e as Error });
          failed = true;
        }
        this.pumpAll();
      }
      if (fresh || this.stopped) continue;
      if (failed || (!this.woken && !this.refill)) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, POLL_MS);
          this.wakeUp = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wakeUp = null;
        // The poll: claim from every endpoint, as a wake does.
        if (!this.refill) this.woken = true;
      }
    }
  }

  /** Drops queued deliveries that can no longer start well inside their lease. */
  private dropStale(): void {
    const now = Date.now();
    for (const [ep, q] of this.queues) {
      let n = 0;
      while (n < q.length && q[n].startBy <= now) n++;
      if (n === 0) continue;
      for (const x of q.splice(0, n)) this.toRelease.push(x.d.id);
      this.queued -= n;
      if (q.length === 0) this.queues.delete(ep);
    }
  }

  /** Starts queued deliveries of an endpoint while it and the process have free slots. */
  private pump(ep: string): void {
    const q = this.queues.get(ep);
    if (!q || this.holding()) return; // the run loop pumps again when the hold ends
    const now = Date.now();
    while (q.length && (this.inFlight.get(ep) ?? 0) < this.perEndpoint && this.total < this.global && !this.stopped) {
      const x = q.shift()!;
      this.queued -= 1;
      if (x.startBy <= now) this.toRelease.push(x.d.id);
      else this.startOne(x.d);
    }
    if (q.length === 0) this.queues.delete(ep);
    if (this.more.has(ep) && q.length < this.perEndpoint && !this.refill) {
      this.refill = true;
      this.wakeUp?.();
    }
  }

  private pumpAll(): void {
    for (const ep of [...this.queues.keys()]) {
      if (this.total >= this.global) return;
      this.pump(ep);
    }
  }

  private startOne(d: Claimed): void {
    this.inFlight.set(d.endpoint_id, (this.inFlight.get(d.endpoint_id) ?? 0) + 1);
    this.total += 1;
    const p = this.attempt(d)
      .catch((e) => log.error("delivery attempt crashed", { error: e as Error, delivery: d.id }))
      .finally(() => {
        const n = (this.inFlight.get(d.endpoint_id) ?? 1) - 1;
        if (n <= 0) this.inFlight.delete(d.endpoint_id);
        else this.inFlight.set(d.endpoint_id, n);
        this.total -= 1;
        this.running.delete(p);
        // A slot is free: the next one waiting, of this endpoint first.
        this.pump(d.endpoint_id);
        this.pumpAll();
      });
    this.running.add(p);
  }

  private async attempt(d: Claimed): Promise<void> {
    const now = new Date();
    const secrets = [d.secret];
    if (d.previous_secret && d.previous_secret_until && d.previous_secret_until > now) secrets.push(d.previous_secret);
    const headers = {
      "webhook-id": d.id,
      "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
      "webhook-signature": sign(d.id, now, d.body, secrets),
    };
    const started = performance.now();
    const r = await this.sender.send(d.url, headers, d.body, this.abort.signal);
    const durationMs = performance.now() - started;
    if (r.aborted) {
      // Shutting down: not an attempt; the lease is given back for another replica or the next start.
      this.abandoned.push(d.id);
      return;
    }
    const n = d.attempts + 1;
    let status: AttemptResult["status"] = "delivered";
    let next: Date | null = null;
    let outcome = "delivered";
    if (!r.ok) {
      const delay = retryDelayMs(n, this.retryScale);
      if (delay === null) {
        status = "failed";
        outcome = "failed";
      } else {
        status = "pending";
        next = new Date(Date.now() + delay);
        outcome = "retry";
      }
      if (r.refused) outcome = "refused";
    }
    this.metrics.deliveries.inc({ outcome });
    this.metrics.attemptDuration.observe({ outcome: r.ok ? "ok" : "error" }, durationMs / 1000);
    const line = `${d.event_type} ${d.id} attempt ${n}/${MAX_ATTEMPTS}: ${r.ok ? `delivered (${r.statusCode})` : r.error}`;
    if (r.ok) log.info(line, { request_id: d.request_id, endpoint: d.endpoint_id });
    else log.warn(line, { request_id: d.request_id, endpoint: d.endpoint_id, status });
    this.results.push({
      deliveryId: d.id,
      endpointId: d.endpoint_id,
      n,
      at: now,
      durationMs,
      statusCode: r.statusCode,
      error: r.error,
      ok: r.ok,
      status,
      nextAttemptAt: next,
    });
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushTimer || this.flushing) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      void this.flush();
    }, 20);
  }

  /** Writes results back in one transaction; kept for the next try if the database is down. */
  async flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (this.results.length === 0) return;
    const batch = this.results;
    this.results = [];
    this.flushing = (async () => {
      try {
        const disabled = await this.store.recordResults(batch);
        // A retry due before the next poll: wake up for it.
        const soonest = Math.min(...batch.map((r) => (r.nextAttemptAt ? r.nextAttemptAt.getTime() : Infinity)));
        const wait = soonest - Date.now();
        if (wait < POLL_MS) setTimeout(() => this.wake(), Math.max(0, wait) + 2).unref();
        if (disabled.length) {
          this.metrics.disabled.inc(disabled.length);
          for (const id of disabled) log.warn(`endpoint ${id} disabled: its last 100 attempts failed`, { endpoint: id });
          this.onDisabled(disabled);
        }
      } catch (e) {
        log.warn(`could not record ${batch.length} results; retrying`, { error: e as Error });
        this.results = batch.concat(this.results);
        await new Promise((r) => setTimeout(r, 1000));
      } finally {
        this.flushing = null;
        if (this.results.length) this.scheduleFlush();
      }
    })();
    return this.flushing;
  }

  /** Stops claiming; in-flight attempts get `graceMs` to finish and be recorded,
   *  then are abandoned and their leases given back. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopped = true;
    this.halt.abort();
    this.wake();
    await this.loop;
    // Claimed ahead, never started: given back with those abandoned below.
    for (const q of this.queues.values()) for (const x of q) this.abandoned.push(x.d.id);
    this.abandoned.push(...this.toRelease);
    this.queues.clear();
    this.queued = 0;
    this.toRelease = [];
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...this.running]),
      new Promise<void>((r) => (timer = setTimeout(r, graceMs))),
    ]);
    clearTimeout(timer);
    this.abort.abort();
    await Promise.all([...this.running]);
    if (this.abandoned.length) {
      await this.store.release(this.abandoned).catch((e) => log.warn("could not release leases", { error: e as Error }));
      log.info(`gave back ${this.abandoned.length} deliveries still in flight`);
    }
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    for (let i = 0; i < 5 && (this.results.length || this.flushing); i++) {
      await this.flush();
    }
  }
}
