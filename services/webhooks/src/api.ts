// The HTTP API (fastify): /api/webhooks…, health, readiness, metrics, OpenAPI.
import { randomUUID } from "node:crypto";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import cors from "@fastify/cors";
import swagger from "@fastify/swagger";
import { EVENT_TYPES } from "./contracts.ts";
import { urlProblem } from "./address.ts";
import { KeyRing } from "./keys.ts";
import { logger } from "./log.ts";
import { RateLimiter } from "./ratelimit.ts";
import { invalid, problem, type FieldError, type Problem } from "./problems.ts";
import type { Metrics } from "./metrics.ts";
import type { EndpointPatch, NewEndpoint, Store } from "./store.ts";
import type { Settings } from "./settings.ts";

const log = logger("api");
export const BODY_LIMIT = 64 * 1024;
export const MAX_FILTER_ITEMS = 100;
export const SECRET_OVERLAP_MS = 24 * 3600 * 1000;
const PREFIX = "/api/webhooks";

// ---- cursors: opaque to clients ----

export function encodeCursor(c: { us: bigint; id: string }): string {
  return Buffer.from(JSON.stringify([c.us.toString(), c.id])).toString("base64url");
}

export function decodeCursor(s: string): { us: bigint; id: string } | null {
  try {
    if (!/^[A-Za-z0-9_-]{1,200}$/.test(s)) return null;
    const v = JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
    if (!Array.isArray(v) || v.length !== 2 || typeof v[0] !== "string" || !/^\d{1,20}$/.test(v[0]) || typeof v[1] !== "string" || v[1].length > 64) return null;
    return { us: BigInt(v[0]), id: v[1] };
  } catch {
    return null;
  }
}

// ---- schemas (validation and the OpenAPI document) ----

const ts = { type: "string", format: "date-time", examples: ["2026-11-22T06:50:13.123Z"] } as const;
const codes = { type: "array", maxItems: MAX_FILTER_ITEMS, uniqueItems: true, items: { type: "string", pattern: "^[A-Za-z0-9_-]{3,64}$" }, description: "only these codes (empty: any)", examples: [["sale"]] } as const;
const tags = { type: "array", maxItems: MAX_FILTER_ITEMS, uniqueItems: true, items: { type: "string", minLength: 1, maxLength: 100 }, description: "only links with any of these tags (empty: any)", examples: [["promo"]] } as const;
const domains = { type: "array", maxItems: MAX_FILTER_ITEMS, uniqueItems: true, items: { type: "string", minLength: 1, maxLength: 253 }, description: "only links of these domains (empty: any; the default domain is the host of LINKFLOW_PUBLIC_URL)", examples: [["go.example"]] } as const;
const events = { type: "array", minItems: 1, maxItems: EVENT_TYPES.length, uniqueItems: true, items: { type: "string", enum: [...EVENT_TYPES] }, examples: [["link.clicked", "link.updated"]] } as const;
const url = { type: "string", minLength: 1, maxLength: 2048, description: "https URL receiving the deliveries", examples: ["https://hooks.example.com/linkflow"] } as const;
const description = { type: "string", maxLength: 1000, examples: ["CRM sync"] } as const;

const endpointProps = {
  id: { type: "string", examples: ["ep_01jd7x2k9m3n4p5q6r7s8t9v0w"] },
  url,
  events,
  codes,
  tags,
  domains,
  description,
  enabled: { type: "boolean" },
  disabled_reason: { type: ["string", "null"], examples: [null] },
  created_at: ts,
  updated_at: ts,
} as const;
const endpointRequired = ["id", "url", "events", "codes", "tags", "domains", "description", "enabled", "disabled_reason", "created_at", "updated_at"];
const Endpoint = { $id: "Endpoint", type: "object", properties: endpointProps, required: endpointRequired } as const;
const secret = { type: "string", pattern: "^whsec_[A-Za-z0-9+/=]{32,}$", examples: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] } as const;
const EndpointWithSecret = {
  $id: "EndpointWithSecret",
  type: "object",
  properties: { ...endpointProps, secret },
  required: [...endpointRequired, "secret"],
} as const;
const NewEndpointBody = {
  $id: "NewEndpoint",
  type: "object",
  additionalProperties: false,
  required: ["url", "events"],
  properties: { url, events, codes, tags, domains, description },
  examples: [{ url: "https://hooks.example.com/linkflow", events: ["link.clicked"], codes: ["sale"] }],
} as const;
const EndpointPatchBody = {
  $id: "EndpointPatch",
  type: "object",
  additionalProperties: false,
  properties: { url, events, codes, tags, domains, description, enabled: { type: "boolean", description: "true re-enables a disabled endpoint and clears its failure count" } },
  examples: [{ enabled: true }],
} as const;
const deliveryProps = {
  id: { type: "string", description: "the webhook-id header of every attempt", examples: ["msg_01jd7x2k9m3n4p5q6r7s8t9v0w"] },
  event_type: { type: "string", examples: ["link.clicked"] },
  status: { type: "string", enum: ["pending", "delivered", "failed"] },
  attempts: { type: "integer", minimum: 0 },
  last_status_code: { type: ["integer", "null"], examples: [503] },
  last_error: { type: ["string", "null"], examples: ["HTTP 503"] },
  next_attempt_at: { type: ["string", "null"], format: "date-time", examples: ["2026-11-22T06:55:13.123Z"] },
  created_at: ts,
} as const;
const deliveryRequired = ["id", "event_type", "status", "attempts", "last_status_code", "last_error", "next_attempt_at", "created_at"];
const DeliveryItem = { $id: "DeliveryItem", type: "object", properties: deliveryProps, required: deliveryRequired } as const;
const Attempt = {
  $id: "Attempt",
  type: "object",
  properties: {
    n: { type: "integer", minimum: 1 },
    at: ts,
    duration_ms: { type: "integer", minimum: 0 },
    status_code: { type: ["integer", "null"] },
    error: { type: ["string", "null"] },
  },
  required: ["n", "at", "duration_ms", "status_code", "error"],
} as const;
const Delivery = {
  $id: "Delivery",
  type: "object",
  properties: { ...deliveryProps, attempt_log: { type: "array", items: { $ref: "Attempt#" } } },
  required: [...deliveryRequired, "attempt_log"],
} as const;
const DeliveryList = {
  $id: "DeliveryList",
  type: "object",
  properties: { items: { type: "array", items: { $ref: "DeliveryItem#" } }, next_cursor: { type: ["string", "null"] } },
  required: ["items", "next_cursor"],
} as const;
const ProblemSchema = {
  $id: "Problem",
  type: "object",
  properties: {
    type: { type: "string", examples: ["https://linkflow.dev/problems/unprocessable-content"] },
    title: { type: "string", examples: ["Unprocessable Content"] },
    status: { type: "integer", examples: [422] },
    detail: { type: "string", examples: ["url: must be an https URL"] },
    errors: {
      type: "array",
      items: { type: "object", properties: { field: { type: "string" }, message: { type: "string" } }, required: ["field", "message"] },
    },
  },
  required: ["type", "title", "status", "detail"],
} as const;

function problems(...codes: number[]): Record<number, unknown> {
  const out: Record<number, unknown> = {};
  const what: Record<number, string> = {
    400: "the body is not JSON",
    401: "no key, or an unknown, revoked or expired one",
    403: "the key lacks the scope webhooks",
    404: "no such endpoint or delivery",
    413: "body over 64 KiB",
    415: "the body is not application/json",
    422: "an invalid field, named in errors",
    429: "too many failed authentications or writes; see Retry-After",
    503: "the database is unavailable; see Retry-After",
  };
  for (const c of [401, 403, 429, 503, ...codes]) {
    out[c] = { description: what[c], content: { "application/problem+json": { schema: { $ref: "Problem#" } } } };
  }
  return out;
}

const idParam = { type: "object", properties: { id: { type: "string", description: "endpoint id (ep_…)" } }, required: ["id"] } as const;
const deliveryParams = {
  type: "object",
  properties: { id: { type: "string", description: "endpoint id" }, delivery_id: { type: "string", description: "delivery id (msg_…)" } },
  required: ["id", "delivery_id"],
} as const;
const security = [{ bearer: [] }];

// ---- the app ----

export interface ApiDeps {
  settings: Settings;
  store: Store;
  keys: KeyRing;
  metrics: Metrics;
  ready: () => Promise<string | null>;
  endpointsChanged: () => Promise<void>;
  wake: () => void;
}

function fieldOf(e: { instancePath?: string; params?: Record<string, unknown> }): string {
  let path = (e.instancePath ?? "").replace(/^\//, "").split("/").filter(Boolean)
    .map((p, i) => (/^\d+$/.test(p) ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
  const extra = (e.params?.missingProperty ?? e.params?.additionalProperty) as string | undefined;
  if (extra) path = path ? `${path}.${extra}` : extra;
  return path || "body";
}

function send(reply: FastifyReply, p: Problem, headers: Record<string, string> = {}): FastifyReply {
  for (const [k, v] of Object.entries(headers)) reply.header(k, v);
  return reply.code(p.status).type("application/problem+json").send(p);
}

export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  const { settings, store, keys, metrics } = deps;
  const authFailures = new RateLimiter(settings.authFailureRate, settings.authFailureBurst);
  const writes = new RateLimiter(settings.writeRate, Math.max(1, Math.ceil(settings.writeRate)));
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT,
    trustProxy: false,
    genReqId: (req) => {
      const h = req.headers["x-request-id"];
      const v = Array.isArray(h) ? h[0] : h;
      return v && v.length > 0 ? v.slice(0, 128) : randomUUID();
    },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: true, useDefaults: false } },
  });

  for (const s of [Endpoint, EndpointWithSecret, NewEndpointBody, EndpointPatchBody, DeliveryItem, Attempt, Delivery, DeliveryList, ProblemSchema]) {
    app.addSchema(s);
  }

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "linkflow webhooks",
        version: "1.0.0",
        description: "Endpoints that receive link and click events, signed (Standard Webhooks) and retried.",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "an API key with scope webhooks (or admin)" } } },
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });

  // Before the guard: a preflight carries no key. Only the web app's origins
  // (LINKFLOW_APP_URL) may call /api/* from a browser, as on the gateway:
  // exact origins, no credentials. Any other origin, or path, gets no
  // Access-Control-Allow-Origin (and its preflight a 404).
  const allowed = new Set(settings.appOrigins);
  await app.register(cors, {
    delegator: (req, done) => {
      const origin = req.headers.origin;
      const ok = typeof origin === "string" && allowed.has(origin) && req.url.startsWith("/api/");
      done(null, {
        origin: ok ? origin : false,
        methods: ["GET", "POST", "PATCH", "DELETE"],
        allowedHeaders: ["authorization", "content-type"],
        credentials: false,
        maxAge: 600,
      });
    },
  });

  app.addHook("onRequest", async (req, reply) => {
    reply.header("x-request-id", req.id);
  });
  app.addHook("onResponse", async (req, reply) => {
    const path = req.url.split("?")[0];
    if (!path.startsWith("/api/")) return;
    log.debug(`${req.method} ${path} ${reply.statusCode}`, { request_id: String(req.id), ms: Math.round(reply.elapsedTime) });
  });

  app.setErrorHandler((err: Error & { validation?: unknown[]; statusCode?: number; code?: string }, req, reply) => {
    if (err.validation) {
      const errors: FieldError[] = (err.validation as Array<{ instancePath?: string; params?: Record<string, unknown>; message?: string }>).map((e) => ({
        field: fieldOf(e),
        message: e.params?.additionalProperty ? "unknown field" : e.message ?? "invalid",
      }));
      return send(reply, invalid(errors));
    }
    const status = err.statusCode ?? 500;
    if (err.code === "FST_ERR_CTP_BODY_TOO_LARGE") return send(reply, problem(413, `the body is over ${BODY_LIMIT} bytes`));
    if (err.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") return send(reply, problem(415, "the body must be application/json"));
    if (status >= 400 && status < 500) return send(reply, problem(status === 415 ? 415 : 400, err.message));
    log.error(`${req.method} ${req.url} failed`, { request_id: String(req.id), error: err });
    if (/ECONNREFUSED|Connection terminated|connect|timeout/i.test(err.message)) {
      return send(reply, problem(503, "the database is unavailable"), { "retry-after": "5" });
    }
    return send(reply, problem(500, "internal error"));
  });
  app.setNotFoundHandler((req, reply) => send(reply, problem(404, `no route ${req.method} ${req.url.split("?")[0]}`)));

  // Authentication and rate limits for every /api/webhooks call but the OpenAPI document.
  const guard = async (req: FastifyRequest, reply: FastifyReply) => {
    if (settings.authOff) return;
    const ip = req.ip;
    const wait = authFailures.peek(ip);
    const r = keys.check(req.headers.authorization);
    if (!r.ok) {
      if (wait > 0 || authFailures.take(ip) > 0) {
        return send(reply, problem(429, "too many failed authentications from this address"), { "retry-after": String(Math.max(wait, 1)) });
      }
      const headers: Record<string, string> = r.status === 401 ? { "www-authenticate": 'Bearer realm="linkflow"' } : {};
      log.info(`${req.method} ${req.url.split("?")[0]}: ${r.detail}`, { request_id: String(req.id) });
      return send(reply, problem(r.status, r.detail), headers);
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      const w = writes.take(r.key.name);
      if (w > 0) return send(reply, problem(429, "too many writes with this key"), { "retry-after": String(w) });
    }
  };

  const checkUrl = (u: string | undefined, errors: FieldError[]) => {
    if (u === undefined) return;
    const why = urlProblem(u, settings.allowHttp, settings.allowPrivate);
    if (why) errors.push({ field: "url", message: why });
  };
  const normDomains = (d: string[] | undefined) => d?.map((x) => x.trim().toLowerCase().replace(/\.$/, ""));

  await app.register(async (api) => {
    api.addHook("onRequest", guard);

    api.post<{ Body: NewEndpoint }>("", {
      schema: {
        operationId: "create_webhook", summary: "Create an endpoint", description: "Answers the endpoint with its secret, shown only here and by the secret rotation.",
        security, body: { $ref: "NewEndpoint#" },
        response: { 201: { description: "the endpoint, with its secret", content: { "application/json": { schema: { $ref: "EndpointWithSecret#" } } } }, ...problems(400, 413, 415, 422) },
      },
    }, async (req, reply) => {
      const errors: FieldError[] = [];
      checkUrl(req.body.url, errors);
      if (errors.length) return send(reply, invalid(errors));
      const made = await store.createEndpoint({
        url: req.body.url,
        events: req.body.events,
        codes: req.body.codes ?? [],
        tags: req.body.tags ?? [],
        domains: normDomains(req.body.domains) ?? [],
        description: req.body.description ?? "",
      }, settings.maxEndpoints);
      if (!made) return send(reply, invalid([{ field: "body", message: `at most ${settings.maxEndpoints} endpoints` }]));
      const { endpoint, secret } = made;
      await deps.endpointsChanged();
      log.info(`endpoint ${endpoint.id} created`, { request_id: String(req.id), endpoint: endpoint.id });
      return reply.code(201).send({ ...endpoint, secret });
    });

    api.get("", {
      schema: {
        operationId: "list_webhooks", summary: "List endpoints", security,
        response: { 200: { description: "every endpoint (never a secret)", content: { "application/json": { schema: { type: "object", properties: { items: { type: "array", items: { $ref: "Endpoint#" } } }, required: ["items"] } } } }, ...problems() },
      },
    }, async () => ({ items: await store.listEndpoints() }));

    api.get<{ Params: { id: string } }>("/:id", {
      schema: {
        operationId: "get_webhook", summary: "One endpoint", security, params: idParam,
        response: { 200: { description: "the endpoint (never its secret)", content: { "application/json": { schema: { $ref: "Endpoint#" } } } }, ...problems(404) },
      },
    }, async (req, reply) => {
      const e = await store.getEndpoint(req.params.id);
      return e ?? send(reply, problem(404, `no endpoint ${req.params.id}`));
    });

    api.patch<{ Params: { id: string }; Body: EndpointPatch }>("/:id", {
      schema: {
        operationId: "update_webhook", summary: "Change an endpoint", security, params: idParam, body: { $ref: "EndpointPatch#" },
        response: { 200: { description: "the endpoint", content: { "application/json": { schema: { $ref: "Endpoint#" } } } }, ...problems(400, 404, 413, 415, 422) },
      },
    }, async (req, reply) => {
      const errors: FieldError[] = [];
      checkUrl(req.body.url, errors);
      if (errors.length) return send(reply, invalid(errors));
      const e = await store.patchEndpoint(req.params.id, { ...req.body, domains: normDomains(req.body.domains) });
      if (!e) return send(reply, problem(404, `no endpoint ${req.params.id}`));
      await deps.endpointsChanged();
      if (req.body.enabled) deps.wake();
      return e;
    });

    api.delete<{ Params: { id: string } }>("/:id", {
      schema: {
        operationId: "delete_webhook", summary: "Delete an endpoint and its deliveries", security, params: idParam,
        response: { 204: { description: "deleted", type: "null" }, ...problems(404) },
      },
    }, async (req, reply) => {
      if (!(await store.deleteEndpoint(req.params.id))) return send(reply, problem(404, `no endpoint ${req.params.id}`));
      await deps.endpointsChanged();
      return reply.code(204).send();
    });

    api.post<{ Params: { id: string } }>("/:id/secret", {
      schema: {
        operationId: "rotate_webhook_secret", summary: "Rotate the signing secret", description: "The old secret keeps signing beside the new one for 24 h.", security, params: idParam,
        response: { 200: { description: "the new secret", content: { "application/json": { schema: { type: "object", properties: { secret }, required: ["secret"] } } } }, ...problems(404) },
      },
    }, async (req, reply) => {
      const s = await store.rotateSecret(req.params.id, SECRET_OVERLAP_MS);
      if (!s) return send(reply, problem(404, `no endpoint ${req.params.id}`));
      log.info(`endpoint ${req.params.id}: secret rotated`, { request_id: String(req.id) });
      return { secret: s };
    });

    api.post<{ Params: { id: string } }>("/:id/test", {
      schema: {
        operationId: "test_webhook", summary: "Send a webhook.test event", security, params: idParam,
        response: { 202: { description: "queued", content: { "application/json": { schema: { type: "object", properties: { id: deliveryProps.id }, required: ["id"] } } } }, ...problems(404) },
      },
    }, async (req, reply) => {
      const e = await store.getEndpoint(req.params.id);
      if (!e) return send(reply, problem(404, `no endpoint ${req.params.id}`));
      const now = new Date();
      const body = `{"type":"webhook.test","timestamp":${JSON.stringify(now.toISOString())},"data":${JSON.stringify({ endpoint_id: e.id })}}`;
      const id = await store.createTestDelivery(e.id, `test/${randomUUID()}`, body, String(req.id));
      deps.wake();
      return reply.code(202).send({ id });
    });

    api.get<{ Params: { id: string }; Querystring: Record<string, string | string[] | undefined> }>("/:id/deliveries", {
      schema: {
        operationId: "list_webhook_deliveries", summary: "Deliveries of an endpoint, newest first", security, params: idParam,
        querystring: {
          type: "object",
          properties: {
            status: { type: "string", enum: ["pending", "delivered", "failed"] },
            limit: { type: "integer", minimum: 1, maximum: 100, default: 50 },
            cursor: { type: "string", description: "next_cursor of the previous page" },
          },
        },
        response: { 200: { description: "a page", content: { "application/json": { schema: { $ref: "DeliveryList#" } } } }, ...problems(404, 422) },
      },
      // The query is checked by hand (422 naming the field), not coerced by the schema.
      validatorCompiler: () => () => true,
    }, async (req, reply) => {
      const q = req.query;
      const errors: FieldError[] = [];
      const one = (k: string) => (Array.isArray(q[k]) ? (q[k] as string[])[0] : (q[k] as string | undefined));
      const status = one("status") ?? null;
      if (status !== null && !["pending", "delivered", "failed"].includes(status)) errors.push({ field: "status", message: "must be pending, delivered or failed" });
      let limit = 50;
      const rawLimit = one("limit");
      if (rawLimit !== undefined) {
        limit = /^\d{1,4}$/.test(rawLimit) ? Number(rawLimit) : NaN;
        if (!(limit >= 1 && limit <= 100)) errors.push({ field: "limit", message: "must be an integer from 1 to 100" });
      }
      const rawCursor = one("cursor");
      const cursor = rawCursor ? decodeCursor(rawCursor) : null;
      if (rawCursor && !cursor) errors.push({ field: "cursor", message: "is not a cursor this API gave" });
      if (errors.length) return send(reply, invalid(errors));
      if (!(await store.getEndpoint(req.params.id))) return send(reply, problem(404, `no endpoint ${req.params.id}`));
      const page = await store.listDeliveries(req.params.id, status, limit, cursor);
      return { items: page.items, next_cursor: page.next ? encodeCursor(page.next) : null };
    });

    api.get<{ Params: { id: string; delivery_id: string } }>("/:id/deliveries/:delivery_id", {
      schema: {
        operationId: "get_webhook_delivery", summary: "One delivery with its attempts", security, params: deliveryParams,
        response: { 200: { description: "the delivery and every attempt", content: { "application/json": { schema: { $ref: "Delivery#" } } } }, ...problems(404) },
      },
    }, async (req, reply) => {
      const d = await store.getDelivery(req.params.id, req.params.delivery_id);
      if (!d) return send(reply, problem(404, `no delivery ${req.params.delivery_id} of endpoint ${req.params.id}`));
      const { attempts_list, ...rest } = d;
      return { ...rest, attempt_log: attempts_list };
    });

    api.post<{ Params: { id: string; delivery_id: string } }>("/:id/deliveries/:delivery_id/retry", {
      schema: {
        operationId: "retry_webhook_delivery", summary: "Deliver again now", security, params: deliveryParams,
        response: { 202: { description: "pending again", content: { "application/json": { schema: { type: "object", properties: { id: deliveryProps.id }, required: ["id"] } } } }, ...problems(404) },
      },
    }, async (req, reply) => {
      if (!(await store.retryDelivery(req.params.id, req.params.delivery_id))) {
        return send(reply, problem(404, `no delivery ${req.params.delivery_id} of endpoint ${req.params.id}`));
      }
      deps.wake();
      return reply.code(202).send({ id: req.params.delivery_id });
    });
  }, { prefix: PREFIX });

  // Public: the OpenAPI document, health, readiness, metrics.
  // Where every linkflow service serves its document, and under the service's own prefix.
  app.get(`${PREFIX}/openapi.json`, { schema: { hide: true } }, async () => openapi());
  app.get("/api/openapi.json", { schema: { hide: true } }, async () => openapi());
  const openapi = () => {
    const doc = app.swagger() as { paths?: Record<string, Record<string, Record<string, unknown>>> };
    for (const [path, ops] of Object.entries(doc.paths ?? {})) {
      if (path.endsWith("/openapi.json")) continue;
      for (const op of Object.values(ops)) op["x-scope"] = "webhooks";
    }
    return doc;
  };
  app.get("/healthz", { schema: { hide: true } }, async () => ({ status: "ok" }));
  app.get("/readyz", { schema: { hide: true } }, async (_req, reply) => {
    const reason = await deps.ready();
    if (reason) return reply.code(503).send({ status: "unavailable", reason });
    return { status: "ready" };
  });
  app.get("/metrics", { schema: { hide: true } }, async (_req, reply) => {
    try {
      const s = await store.pendingStats();
      metrics.pending.reset();
      for (const p of s.perEndpoint) metrics.pending.set({ endpoint: p.endpoint_id }, p.n);
      metrics.oldestPending.set(s.oldestSeconds);
    } catch {
      /* database down: the gauges keep their last values */
    }
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  return app;
}
