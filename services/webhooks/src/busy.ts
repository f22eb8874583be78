// Redirects first: while a gateway says `redirects.busy` (core NATS), the intake and the
// deliverer hold off, within a yield lag, and catch up after. JetStream keeps the clicks
// meanwhile and PostgreSQL the due deliveries. Built from shared/schemas/RedirectsBusy.json
// and the AsyncAPI document's `redirects_busy` channel: the same contract the Python
// workers read.
//
// On one machine (`linkflow up`, a compose host) this service shares the CPUs with the
// gateway and nats-server; a lower priority alone is not enough (it runs in every gap the
// gateway leaves, and nats-server does its fetch and ack work at full priority).
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Gauge } from "prom-client";
import { redirectsBusy } from "./contracts.ts";
import { logger } from "./log.ts";

const log = logger("busy");
export const SUBJECT = "redirects.busy";

interface Signal {
  gateway: string;
  load: number;
  hold: number;
}

export class BusyGateways {
  readonly yieldLagMs: number;
  /** By gateway: until when (ms, Date.now()) its last signal holds. */
  private until = new Map<string, number>();
  private sub: Subscription | null = null;
  private refused = false;
  private holding = new Set<string>();
  private gauge: Gauge<"consumer"> | null;

  /** `yieldLagMs` 0: never subscribes and never holds. */
  constructor(yieldLagMs: number, gauge: Gauge<"consumer"> | null = null) {
    this.yieldLagMs = yieldLagMs;
    this.gauge = gauge;
  }

  start(nc: NatsConnection): void {
    if (this.yieldLagMs <= 0) return;
    this.sub = nc.subscribe(SUBJECT, { callback: (err, m) => (err ? undefined : this.take(m.data)) });
  }

  stop(): void {
    this.sub?.unsubscribe();
    this.sub = null;
  }

  /** One `redirects.busy` message; a malformed one is ignored (fire-and-forget: no dead letter). */
  take(data: Uint8Array): void {
    let s: unknown;
    try {
      s = JSON.parse(new TextDecoder().decode(data));
    } catch {
      s = null;
    }
    if (!redirectsBusy(s)) {
      if (!this.refused) log.warn(`ignoring a malformed ${SUBJECT} message: ${redirectsBusy.errorsText() || "not JSON"}`);
      this.refused = true;
      return;
    }
    const sig = s as Signal;
    const now = Date.now();
    for (const [g, t] of this.until) if (t <= now) this.until.delete(g);
    this.until.set(sig.gateway, now + sig.hold * 1000);
  }

  /** Until when (ms) some gateway's hold lasts; 0 when none. */
  private get holdUntil(): number {
    let t = 0;
    for (const u of this.until.values()) t = Math.max(t, u);
    return t;
  }

  get busy(): boolean {
    return Date.now() < this.holdUntil;
  }

  /** Whether work whose oldest part is from `behindSince` (ms) should wait now. */
  holds(behindSince: number): boolean {
    return this.busy && Date.now() - behindSince < this.yieldLagMs;
  }

  /** Resolves when `who` may work: no gateway busy, or its oldest unhandled work (from
   *  `behindSince`, ms) is the yield lag old, or `signal` aborts. */
  async turn(who: string, behindSince: number, signal?: AbortSignal): Promise<void> {
    try {
      while (!signal?.aborted) {
        const now = Date.now();
        const wait = this.holdUntil - now;
        const room = behindSince + this.yieldLagMs - now;
        if (wait <= 0 || room <= 0) return;
        if (!this.holding.has(who)) {
          this.holding.add(who);
          this.gauge?.set({ consumer: who }, 1);
        }
        // Re-checked after: a newer signal may have moved the hold on.
        await new Promise<void>((resolve) => {
          const t = setTimeout(done, Math.min(wait, room));
          function done() {
            clearTimeout(t);
            signal?.removeEventListener("abort", done);
            resolve();
          }
          signal?.addEventListener("abort", done, { once: true });
        });
      }
    } finally {
      if (this.holding.delete(who)) this.gauge?.set({ consumer: who }, 0);
    }
  }
}
