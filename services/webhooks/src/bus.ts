// NATS: connection, the durable consumers, dead letters.
import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, headers as natsHeaders, type NatsConnection, type MsgHdrs } from "@nats-io/transport-node";
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import type { NatsSettings } from "./settings.ts";

export const LINKS = "LINKS";
export const CLICKS = "CLICKS";
export const LINKS_CONSUMER = "webhooks-links";
export const CLICKS_CONSUMER = "webhooks-clicks";
export const INBOX_PREFIX = "_INBOX_webhooks";
export const ACK_WAIT_MS = 30_000;
export const MAX_DELIVER = 5;

export async function connectNats(s: NatsSettings, name = "webhooks"): Promise<NatsConnection> {
  return connect({
    servers: s.servers,
    name,
    user: s.user,
    pass: s.pass,
    token: s.token,
    tls: s.tls ? {} : undefined,
    authenticator: s.creds ? credsAuthenticator(readFileSync(s.creds)) : undefined,
    inboxPrefix: INBOX_PREFIX,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    waitOnFirstConnect: true,
    timeout: 5000,
  });
}

export function isNotFound(e: unknown): boolean {
  const err = e as { code?: unknown; api_error?: { err_code?: number; code?: number }; message?: string };
  const code = err?.api_error?.err_code;
  return code === 10014 || code === 10059 || err?.api_error?.code === 404 || /not found/i.test(String(err?.message ?? ""));
}

export class Bus {
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly js: JetStreamClient;

  constructor(nc: NatsConnection, jsm: JetStreamManager) {
    this.nc = nc;
    this.jsm = jsm;
    this.js = jetstream(nc);
  }

  static async open(nc: NatsConnection): Promise<Bus> {
    return new Bus(nc, await jetstreamManager(nc, { checkAPI: false }));
  }

  /** The durable consumer, created with deliver policy `new` when absent. Returns true if created. */
  async ensureConsumer(stream: string, name: string, filter: string): Promise<boolean> {
    try {
      await this.jsm.consumers.info(stream, name);
      return false;
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    await this.jsm.consumers.add(stream, {
      durable_name: name,
      filter_subject: filter,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.New,
      ack_wait: ACK_WAIT_MS * 1_000_000,
      max_deliver: -1, // the service dead-letters by itself; transient failures never exhaust it
      max_ack_pending: 2000,
    });
    return true;
  }

  async consumerExists(stream: string, name: string): Promise<boolean> {
    try {
      await this.jsm.consumers.info(stream, name);
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  async deleteConsumer(stream: string, name: string): Promise<boolean> {
    try {
      return await this.jsm.consumers.delete(stream, name);
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  /** Dead-letters `m` (published to dlq.<stream>.<consumer>, awaiting the PubAck); the caller terms it. */
  async deadLetter(m: JsMsg, consumer: string, error: string, firstFailedAt?: Date): Promise<void> {
    const h = natsHeaders();
    if (m.headers) {
      for (const [k, vs] of m.headers) {
        if (k.toLowerCase() === "nats-msg-id") continue;
        for (const v of vs) h.append(k, v);
      }
    }
    const original = m.headers?.get("Nats-Msg-Id");
    const now = new Date().toISOString();
    h.set("Linkflow-Original-Subject", m.subject);
    h.set("Linkflow-Stream-Seq", String(m.seq));
    h.set("Linkflow-Attempts", String(m.info.deliveryCount));
    h.set("Linkflow-Error", oneLine(error));
    h.set("Linkflow-First-Failed-At", (firstFailedAt ?? new Date()).toISOString());
    h.set("Linkflow-Failed-At", now);
    if (original) h.set("Linkflow-Original-Msg-Id", original);
    await this.js.publish(`dlq.${m.info.stream}.${consumer}`, m.data, { headers: h, msgID: `${consumer}:${m.seq}` });
  }
}

export function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ").slice(0, 1000);
}

export function header(h: MsgHdrs | undefined, name: string): string | null {
  const v = h?.get(name);
  return v ? v : null;
}
