// Prometheus metrics (prom-client), on a registry of this service's own.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class Metrics {
  readonly registry = new Registry();
  readonly deliveries: Counter<"outcome">;
  readonly attemptDuration: Histogram<"outcome">;
  readonly pending: Gauge<"endpoint">;
  readonly oldestPending: Gauge;
  readonly intake: Counter<"consumer" | "outcome">;
  readonly disabled: Counter;
  readonly yielding: Gauge<"consumer">;

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    this.deliveries = new Counter({
      name: "linkflow_webhook_deliveries_total",
      help: "Delivery attempts by outcome: delivered, retry, failed (no retry left), refused (address not allowed)",
      labelNames: ["outcome"],
      registers,
    });
    this.attemptDuration = new Histogram({
      name: "linkflow_webhook_attempt_duration_seconds",
      help: "Duration of delivery attempts",
      labelNames: ["outcome"],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15],
      registers,
    });
    this.pending = new Gauge({
      name: "linkflow_webhook_pending",
      help: "Deliveries waiting for an attempt, per endpoint",
      labelNames: ["endpoint"],
      registers,
    });
    this.oldestPending = new Gauge({
      name: "linkflow_webhook_oldest_pending_seconds",
      help: "Age of the oldest pending delivery",
      registers,
    });
    this.intake = new Counter({
      name: "linkflow_worker_messages_total",
      help: "Bus messages handled by the webhooks intake: ack, nak, dead_letter",
      labelNames: ["consumer", "outcome"],
      registers,
    });
    this.disabled = new Counter({
      name: "linkflow_webhook_endpoints_disabled_total",
      help: "Endpoints disabled because their last 100 attempts failed",
      registers,
    });
    // The Python workers' gauge, by the same name: one panel and one query for all.
    this.yielding = new Gauge({
      name: "linkflow_worker_yielding",
      help: "1 while a worker holds off because a gateway said redirects.busy",
      labelNames: ["consumer"],
      registers,
    });
  }
}
