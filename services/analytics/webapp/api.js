// Calls to linkflow's APIs with the session's key. Analytics is this
// page's own origin; the gateway's API (links) is at config.gateway and the
// webhooks service's at config.webhooks, which both allow this origin by
// CORS (LINKFLOW_APP_URL).

const KEY = "linkflow-key";
let gateway = "";
let webhooksBase = "";
// A click-recorder's API (raw clicks' export), when browsers reach one; else null.
let clicksBase = null;

export class ApiError extends Error {
  // A problem+json answer: detail for the page, errors by field for the form.
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.fields = Object.fromEntries((problem.errors || []).map(e => [e.field, e.message]));
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: value => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export async function configure() {
  const r = await fetch("config.json");
  const config = await r.json();
  gateway = config.gateway;
  webhooksBase = config.webhooks;
  clicksBase = config.clicks;
  return gateway;
}

export function gatewayUrl(path) {
  return gateway + path;
}

async function call(url, {method = "GET", body, json, signal, raw} = {}) {
  const headers = {authorization: `Bearer ${key.get()}`};
  if (json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(json);
  } else if (typeof body === "string") headers["content-type"] = "text/csv";
  const r = await fetch(url, {method, headers, body, signal});
  if (raw && r.ok) return r;
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json() : {detail: await r.text()};
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

// A query string of the params that are set ("" for none).
function query(params) {
  const q = String(new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined)));
  return q ? `?${q}` : "";
}

// A link of the gateway's API: (code, domain) name it; no domain, the default one.
const link = (code, domain, path = "", params = {}) =>
  gatewayUrl(`/api/links/${encodeURIComponent(code)}${path}${query({...params, domain})}`);

// The gateway's link API.
export const links = {
  list: params => call(gatewayUrl(`/api/links?${new URLSearchParams(params)}`)),
  get: (code, domain) => call(link(code, domain)),
  create: body => call(gatewayUrl("/api/links"), {method: "POST", json: body}),
  update: (code, domain, body) => call(link(code, domain), {method: "PATCH", json: body}),
  remove: (code, domain) => call(link(code, domain), {method: "DELETE"}),
  history: (code, domain) => call(link(code, domain, "/history")),
  qr: (code, domain) => call(link(code, domain, "/qr", {format: "svg", size: 192}), {raw: true}),
  import: csv => call(gatewayUrl("/api/links/import"), {method: "POST", body: csv}),
};

// The gateway's short domains (admin keys only).
const domain = host => gatewayUrl(`/api/domains/${encodeURIComponent(host)}`);
export const domains = {
  list: () => call(gatewayUrl("/api/domains")),
  create: body => call(gatewayUrl("/api/domains"), {method: "POST", json: body}),
  update: (host, body) => call(domain(host), {method: "PATCH", json: body}),
  remove: host => call(domain(host), {method: "DELETE"}),
};

// The webhooks service's API: endpoints and their deliveries.
const hook = (id, path = "") => `${webhooksBase}/api/webhooks/${encodeURIComponent(id)}${path}`;
export const webhooks = {
  list: () => call(`${webhooksBase}/api/webhooks`),
  create: body => call(`${webhooksBase}/api/webhooks`, {method: "POST", json: body}),
  update: (id, body) => call(hook(id), {method: "PATCH", json: body}),
  remove: id => call(hook(id), {method: "DELETE"}),
  rotate: id => call(hook(id, "/secret"), {method: "POST"}),
  test: id => call(hook(id, "/test"), {method: "POST"}),
  deliveries: (id, params) => call(hook(id, `/deliveries?${new URLSearchParams(params)}`)),
  delivery: (id, delivery) => call(hook(id, `/deliveries/${encodeURIComponent(delivery)}`)),
  retry: (id, delivery) => call(hook(id, `/deliveries/${encodeURIComponent(delivery)}/retry`), {method: "POST"}),
};

// The analytics API (this origin).
export const stats = {
  session: () => call("/api/session"),
  link: (code, params) => call(`/api/stats/links/${encodeURIComponent(code)}${query(params)}`),
  top: params => call(`/api/stats/top?${new URLSearchParams(params)}`),
  orphans: params => call(`/api/stats/orphans?${new URLSearchParams(params)}`),
  created: params => call(`/api/stats/links-created?${new URLSearchParams(params)}`),
};

// Files to save (CSV): the answer as it came, for a download.
export const exports = {
  figures: (code, params) => call(`/api/stats/links/${encodeURIComponent(code)}/export${query(params)}`, {raw: true}),
  clicks: params => call(`${clicksBase}/api/clicks${query(params)}`, {raw: true}),
  hasClicks: () => Boolean(clicksBase),
};

export const ops = {
  pipeline: () => call("/api/pipeline"),
  history: () => call("/api/pipeline/history"),
  dlq: () => call("/api/dlq?limit=50"),
  replay: seq => call(`/api/dlq/${seq}/replay`, {method: "POST"}),
  discard: seq => call(`/api/dlq/${seq}`, {method: "DELETE"}),
  backfills: () => call("/api/backfills"),
  backfill: body => call("/api/backfills", {method: "POST", json: body}),
  cancel: id => call(`/api/backfills/${encodeURIComponent(id)}`, {method: "DELETE"}),
};

// Server-sent clicks, read with fetch: EventSource cannot send the key.
// code and domain name one link's clicks (no code: every link's). onOpen
// runs once the server has subscribed for this page (its ": connected"
// comment): clicks from then on are counted.
export async function follow({code, domain}, onClick, signal, onOpen = () => {}) {
  const r = await call(`/api/stream/clicks${query({code, domain})}`, {signal, raw: true});
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let open = false;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    if (!open && buffer.includes(": connected\n\n")) {
      open = true;
      onOpen();
    }
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter(l => l.startsWith("data:"))
        .map(l => l.slice(5))
        .join("\n");
      if (/^event: *click$/m.test(event) && data) onClick(JSON.parse(data));
    }
  }
}
