// linkflow's web app: plain modules, no build step (README, "Web app").
import uPlot from "./vendor/uplot/uPlot.esm.js";
import {ApiError, configure, follow, key, links, ops, stats} from "./api.js";

const $ = (sel, root = document) => root.querySelector(sel);
const view = $("#view");
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const when = t => t ? new Date(t).toLocaleString() : "";
let scopes = [];
let leaving = [];  // what the current page must stop when another is shown
const can = scope => scopes.includes(scope);

function alertBox(message) {
  const box = $("#alert");
  box.textContent = message || "";
  box.hidden = !message;
}

// Errors from the API: the problem's detail on top, field errors by their field.
function showError(err, form) {
  if (form) form.querySelectorAll(".field-error").forEach(e => e.remove());
  if (err instanceof ApiError && err.status === 401) { signOut(err.message); return; }
  alertBox(err.message);
  if (form && err.fields) {
    for (const [field, message] of Object.entries(err.fields)) {
      const name = field.split(/[.[]/)[0];
      const input = form.elements[name];
      const p = document.createElement("p");
      p.className = "field-error";
      p.id = `error-${name}`;
      p.textContent = `${field}: ${message}`;
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", p.id);
        input.after(p);
      } else form.prepend(p);
    }
  }
}

// Which page is showing: an answer that arrives after its page was left
// (the user moved on) is dropped, its error too.
let shown = 0;

async function guarded(work, form) {
  const mine = shown;
  try { alertBox(""); return await work(); } catch (err) {
    if (mine === shown) showError(err, form);
    return undefined;
  }
}

// -- signing in and out ----------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const input = $("#key");
  key.set(input.value.trim());
  input.value = "";
  await start();
}

function signOut(why = "") {
  key.clear();
  scopes = [];
  stopPage();
  $("#nav").hidden = $("#who").hidden = $("#signout").hidden = true;
  $("#signin").hidden = false;
  view.innerHTML = "";
  alertBox(why);
  if (location.hash) history.replaceState(null, "", location.pathname);
  $("#key").focus();
}

async function start() {
  try {
    const session = await stats.session();
    scopes = session.scopes;
    $("#who").textContent = session.name ? `signed in as ${session.name}` : "signed in";
  } catch (err) {
    key.clear();
    $("#signin").hidden = false;
    alertBox(err.message);
    return;
  }
  $("#signin").hidden = true;
  $("#nav").hidden = $("#who").hidden = $("#signout").hidden = false;
  for (const a of document.querySelectorAll("#nav a[data-scope]")) a.hidden = !can(a.dataset.scope);
  alertBox("");
  route();
}

// -- routing ---------------------------------------------------------------

function stopPage() {
  shown += 1;
  leaving.forEach(stop => stop());
  leaving = [];
  [...plots.keys()].forEach(unplot);
}

function route() {
  if (!key.get()) return;
  stopPage();
  alertBox("");
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (path.startsWith(a.getAttribute("href").slice(1))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const pages = {
    overview: overviewPage,
    links: () => parts[1] === "new" ? editPage(null) : parts[2] === "edit" ? editPage(parts[1]) : parts[1] ? linkPage(parts[1]) : linksPage(),
    import: importPage,
    operations: operationsPage,
  };
  (pages[parts[0]] || overviewPage)();
  $("#main").focus({preventScroll: true});
}

function page(title, html) {
  document.title = `${title} · linkflow`;
  view.innerHTML = `<h1>${esc(title)}</h1>${html}`;
}

// -- overview --------------------------------------------------------------

async function overviewPage() {
  page("Overview", `<div class="stats">
      <div class="card"><div class="muted">clicks by people, 7 days</div><div class="big" id="total">…</div></div>
      <div class="card"><div class="muted">links created, 30 days</div><div class="big" id="created-total">…</div></div>
    </div>
    <h2>Top links (7 days)</h2><div class="table-wrap"><table id="top"><thead><tr><th>link</th><th class="num">clicks</th></tr></thead><tbody></tbody></table></div>
    <h2>Links created per day (30 days)</h2><div id="created-chart" class="chart" role="img" aria-label="links created per day"></div>`);
  if (!can("stats:read")) { $("#total").textContent = "–"; $("#created-total").textContent = "–"; return; }
  await guarded(async () => {
    const from = new Date(Date.now() - 7 * 86400e3).toISOString();
    const top = await stats.top({from, limit: 10});
    if (!$("#total")) return;  // its page was left meanwhile
    $("#total").textContent = top.items.reduce((n, i) => n + i.count, 0);
    $("#top tbody").innerHTML = top.items.map(i => `<tr><td><a href="#/links/${encodeURIComponent(i.code)}">${esc(i.code)}</a></td><td class="num">${i.count}</td></tr>`).join("")
      || `<tr><td colspan="2" class="muted">no clicks yet</td></tr>`;
    const created = await stats.created({from: new Date(Date.now() - 30 * 86400e3).toISOString().slice(0, 10)});
    if (!$("#created-total")) return;
    $("#created-total").textContent = created.days.reduce((n, d) => n + d.count, 0);
    chart($("#created-chart"), created.days.map(d => Date.parse(d.day) / 1000), [["links", created.days.map(d => d.count)]]);
  });
}

// -- links -----------------------------------------------------------------

async function linksPage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  page("Links", `<form id="filter" class="row" role="search">
      <div><label for="q">Search</label><input id="q" name="q" type="search" value="${esc(params.get("q"))}" placeholder="code or target"></div>
      <div><label for="tag">Tag</label><input id="tag" name="tag" value="${esc(params.get("tag"))}"></div>
      <button type="submit" class="secondary">Filter</button>
      ${can("links:write") ? `<a class="button" href="#/links/new">New link</a>` : ""}
    </form>
    <div class="table-wrap"><table id="links"><thead><tr><th>code</th><th>target</th><th class="hide-s">tags</th><th class="hide-s">created</th><th></th></tr></thead><tbody></tbody></table></div>
    <p class="row"><button type="button" id="more" class="secondary" hidden>Next page</button></p>`);
  $("#filter").addEventListener("submit", e => {
    e.preventDefault();
    const f = new URLSearchParams([...new FormData(e.target)].filter(([, v]) => v));
    location.hash = `#/links?${f}`;
  });
  let cursor = null;
  const body = $("#links tbody");
  const load = () => guarded(async () => {
    const query = {limit: 20};
    for (const name of ["q", "tag"]) if (params.get(name)) query[name] = params.get(name);
    if (cursor) query.cursor = cursor;
    const result = await links.list(query);
    body.insertAdjacentHTML("beforeend", result.items.map(l => `<tr>
        <td><a href="#/links/${encodeURIComponent(l.code)}">${esc(l.code)}</a></td>
        <td class="url">${esc(l.url)}</td>
        <td class="hide-s">${l.tags.map(t => `<span class="tag">${esc(t)}</span>`).join("")}</td>
        <td class="hide-s">${esc(when(l.created_at))}</td>
        <td><button type="button" class="secondary copy" data-url="${esc(l.short_url)}" aria-label="copy ${esc(l.short_url)}">Copy</button></td></tr>`).join(""));
    if (!body.children.length) body.innerHTML = `<tr><td colspan="5" class="muted">no links</td></tr>`;
    cursor = result.next_cursor;
    $("#more").hidden = !cursor;
  });
  $("#more").addEventListener("click", load);
  body.addEventListener("click", e => { if (e.target.matches(".copy")) copy(e.target); });
  await load();
}

async function copy(button) {
  try {
    await navigator.clipboard.writeText(button.dataset.url);
    button.textContent = "Copied";
  } catch {
    // No clipboard (an insecure origin): select the text for the user instead.
    prompt("Copy the short URL", button.dataset.url);
  }
}

const FIELDS = `
  <label for="url">Target URL</label><input id="url" name="url" type="url" required size="60">
  <label for="code">Code <span class="muted">(empty: a random one)</span></label><input id="code" name="code" pattern="[A-Za-z0-9_-]{3,64}">
  <label for="redirect_type">Redirect type</label>
  <select id="redirect_type" name="redirect_type"><option>302</option><option>301</option><option>307</option><option>308</option></select>
  <label for="expires_at">Expires <span class="muted">(local time, optional)</span></label><input id="expires_at" name="expires_at" type="datetime-local">
  <label for="max_visits">Visit limit <span class="muted">(optional)</span></label><input id="max_visits" name="max_visits" type="number" min="1">
  <label for="tags">Tags <span class="muted">(comma-separated)</span></label><input id="tags" name="tags">
  <label class="inline"><input id="forward_query" name="forward_query" type="checkbox"> Forward the visitor's query string</label>
  <label for="rules">Redirect rules <span class="muted">(JSON: [{"when": {"os": ["ios"]}, "url": "…"}])</span></label>
  <textarea id="rules" name="rules" spellcheck="false">[]</textarea>`;

function readForm(form, editing) {
  const f = form.elements;
  const body = {
    url: f.url.value.trim(),
    redirect_type: Number(f.redirect_type.value),
    expires_at: f.expires_at.value ? new Date(f.expires_at.value).toISOString() : null,
    max_visits: f.max_visits.value ? Number(f.max_visits.value) : null,
    tags: f.tags.value.split(",").map(t => t.trim()).filter(Boolean),
    forward_query: f.forward_query.checked,
  };
  try { body.rules = JSON.parse(f.rules.value || "[]"); } catch {
    throw new ApiError(422, {detail: "the redirect rules are not valid JSON", errors: [{field: "rules", message: "not valid JSON"}]});
  }
  if (!editing && f.code.value.trim()) body.code = f.code.value.trim();
  return body;
}

function localTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
}

async function editPage(code) {
  // Editing: the fields stay disabled until the link is loaded into them.
  page(code ? `Edit ${code}` : "New link", `<form id="link" class="card" novalidate>
    <fieldset id="fields" ${code ? "disabled" : ""}><legend>${code ? "Link" : "New link"}</legend>${FIELDS}</fieldset>
    <p class="row"><button type="submit">${code ? "Save" : "Create"}</button>
    <a class="button secondary" href="${code ? `#/links/${encodeURIComponent(code)}` : "#/links"}">Cancel</a></p></form>`);
  const form = $("#link");
  if (code) {
    const link = await guarded(() => links.get(code));
    if (!link) return;
    const f = form.elements;
    f.url.value = link.url;
    f.code.value = link.code;
    f.code.disabled = true;
    f.redirect_type.value = String(link.redirect_type);
    f.expires_at.value = localTime(link.expires_at);
    f.max_visits.value = link.max_visits ?? "";
    f.tags.value = link.tags.join(", ");
    f.forward_query.checked = link.forward_query;
    f.rules.value = JSON.stringify(link.rules, null, 2);
    $("#fields").disabled = false;
    f.code.disabled = true;
  }
  form.addEventListener("submit", e => {
    e.preventDefault();
    guarded(async () => {
      const body = readForm(form, Boolean(code));
      const saved = code ? await links.update(code, body) : await links.create(body);
      location.hash = `#/links/${encodeURIComponent(saved.code)}`;
    }, form);
  });
}

async function linkPage(code) {
  page(code, `<div id="summary" class="card"></div>
    <h2>Clicks</h2>
    <form id="range" class="row">
      <div><label for="from">From</label><input id="from" name="from" type="datetime-local"></div>
      <div><label for="to">To</label><input id="to" name="to" type="datetime-local"></div>
      <div><label for="interval">Per</label><select id="interval" name="interval"><option value="hour">hour</option><option value="day">day</option></select></div>
      <label class="inline"><input id="bots" name="bots" type="checkbox"> Show bots</label>
      <button type="submit" class="secondary">Show</button>
    </form>
    <div class="stats">
      <div class="card"><div class="muted">clicks in range</div><div class="big" id="clicks">…</div></div>
      <div class="card"><div class="muted">unique visitors</div><div class="big" id="visitors">…</div></div>
      <div class="card"><div class="muted" id="live-state">live: connecting…</div><div class="big" id="live" aria-live="polite">0</div></div>
    </div>
    <div id="chart" class="chart" role="img" aria-label="clicks over time"></div>
    <div class="stats" id="dims"></div>
    <h2>History</h2><div class="table-wrap"><table id="history"><thead><tr><th>version</th><th>changed</th><th>by</th><th>target</th><th class="hide-s">limit</th><th></th></tr></thead><tbody></tbody></table></div>`);
  const link = await guarded(() => links.get(code));
  if (!link) return;
  $("#summary").innerHTML = `<p><strong>Short URL</strong> <a href="${esc(link.short_url)}">${esc(link.short_url)}</a>
      <button type="button" class="secondary copy" data-url="${esc(link.short_url)}" aria-label="copy the short URL">Copy</button></p>
    <p><strong>Target</strong> <span class="url">${esc(link.url)}</span></p>
    <p class="muted">${link.redirect_type} · version ${link.version}${link.max_visits ? ` · at most ${link.max_visits} visits` : ""}${link.expires_at ? ` · expires ${esc(when(link.expires_at))}` : ""}${link.forward_query ? " · forwards the query" : ""}${link.rules.length ? ` · ${link.rules.length} rule(s)` : ""}
      ${link.tags.map(t => `<span class="tag">${esc(t)}</span>`).join("")}</p>
    <img class="qr" id="qr" alt="QR code of ${esc(link.short_url)}">
    <p class="row">${can("links:write") ? `<a class="button" href="#/links/${encodeURIComponent(code)}/edit">Edit</a>
      <button type="button" class="danger" id="delete">Delete</button>` : ""}</p>`;
  $("#summary .copy").addEventListener("click", e => copy(e.target));
  const qr = await guarded(() => links.qr(code));
  if (qr) {
    const url = URL.createObjectURL(await qr.blob());
    $("#qr").src = url;
    leaving.push(() => URL.revokeObjectURL(url));
  }
  $("#delete")?.addEventListener("click", () => {
    if (!confirm(`Delete ${code}? Its short URL stops working.`)) return;
    guarded(async () => { await links.remove(code); location.hash = "#/links"; });
  });
  const history = await guarded(() => links.history(code));
  if (history) {
    $("#history tbody").innerHTML = history.items.map(v => `<tr><td>${v.version}</td><td>${esc(when(v.updated_at))}</td>
      <td>${esc(v.changed_by ?? "")}</td><td class="url">${esc(v.url)}</td><td class="hide-s">${v.max_visits ?? ""}</td><td>${v.deleted_at ? "deleted" : ""}</td></tr>`).join("");
  }
  if (!can("stats:read")) return;
  const range = $("#range");
  range.elements.from.value = localTime(new Date(Date.now() - 7 * 86400e3).toISOString());
  const load = () => guarded(async () => {
    const f = range.elements;
    const query = {interval: f.interval.value, include_bots: f.bots.checked};
    if (f.from.value) query.from = new Date(f.from.value).toISOString();
    if (f.to.value) query.to = new Date(f.to.value).toISOString();
    const s = await stats.link(code, query);
    if (!$("#clicks")) return;  // its page was left meanwhile
    $("#clicks").textContent = s.total;
    $("#visitors").textContent = s.visitors;
    chart($("#chart"), s.series.map(p => Date.parse(p.ts) / 1000), [["clicks", s.series.map(p => p.count)], ["visitors", s.series.map(p => p.visitors)]]);
    $("#dims").innerHTML = [["referrers", "referrer"], ["countries", "country"], ["devices", "device"], ["browsers", "browser"], ["oses", "os"]]
      .map(([name, field]) => `<div><h2>${name}</h2><table><tbody>${s[name].map(r => `<tr><td>${esc(r[field] ?? "(none)")}</td><td class="num">${r.count}</td></tr>`).join("") || `<tr><td class="muted">none</td></tr>`}${
        // The API lists the most clicked ten; the clicks of the rest, summed.
        s.others?.[name] ? `<tr class="others"><td class="muted">others</td><td class="num">${s.others[name]}</td></tr>` : ""}</tbody></table></div>`).join("");
  }, range);
  range.addEventListener("submit", e => { e.preventDefault(); load(); });
  await load();
  // The live counter counts clicks as they are redirected; the aggregates
  // behind the chart follow a moment later, so they are reloaded after one.
  const abort = new AbortController();
  const liveState = $("#live-state");
  let pending = null;
  leaving.push(() => { abort.abort(); clearTimeout(pending); });
  follow(code, click => {
    if (click.is_bot && !range.elements.bots.checked) return;
    $("#live").textContent = Number($("#live").textContent) + 1;
    clearTimeout(pending);
    pending = setTimeout(load, 700);
  }, abort.signal, () => { liveState.textContent = "live, since this page opened"; })
    .then(() => { if (!abort.signal.aborted) liveState.textContent = "live: not connected"; },
          () => { if (!abort.signal.aborted) liveState.textContent = "live: not connected"; });
  const timer = setInterval(load, 10000);
  leaving.push(() => clearInterval(timer));
}

// The charts showing, each with what removes it: redrawn in place when
// their data is reloaded, all removed when the page is left.
const plots = new Map();

function unplot(target) {
  plots.get(target)?.();
  plots.delete(target);
}

function chart(target, xs, series, window = null) {
  if (!target) return;  // its page was left meanwhile
  unplot(target);
  target.innerHTML = "";
  if (!xs.length) { target.innerHTML = `<p class="muted">no data in this range</p>`; return; }
  const colours = ["#0b57d0", "#b3261e", "#137333", "#8430ce", "#b06000"];
  const plot = new uPlot({
    width: Math.max(target.clientWidth, 280), height: 240,
    scales: window ? {x: {time: true, range: () => window}} : {},
    series: [{}, ...series.map(([label], i) => ({label, stroke: colours[i], width: 2}))],
    axes: [{}, {}],
  }, [xs, ...series.map(([, ys]) => ys)], target);
  const resize = () => plot.setSize({width: Math.max(target.clientWidth, 280), height: 240});
  addEventListener("resize", resize);
  plots.set(target, () => { removeEventListener("resize", resize); plot.destroy(); });
}

// -- import ------------------------------------------------------------------

function importPage() {
  page("Import links", `<form id="import" class="card">
      <p>A CSV file with a header line <code>url,code</code> (code may be empty). Every good row is
        imported; every refused row is reported with its line.</p>
      <label for="file">CSV file</label><input id="file" name="file" type="file" accept=".csv,text/csv" required>
      <p class="row"><button type="submit">Import</button></p></form>
    <div id="report"></div>`);
  $("#import").addEventListener("submit", e => {
    e.preventDefault();
    guarded(async () => {
      const file = e.target.elements.file.files[0];
      const r = await links.import(await file.text());
      $("#report").innerHTML = `<p role="status"><strong>${r.imported}</strong> imported, ${r.skipped} skipped, ${r.errors.length} refused.</p>
        <div class="table-wrap"><table id="import-errors"><thead><tr><th>line</th><th>why it was refused</th></tr></thead><tbody>
        ${r.errors.map(x => `<tr><td>${x.line}</td><td>${esc(x.message)}</td></tr>`).join("")}</tbody></table></div>
        <ul>${r.links.map(l => `<li><a href="#/links/${encodeURIComponent(l.code)}">${esc(l.short_url)}</a></li>`).join("")}</ul>`;
    }, e.target);
  });
}

// -- operations --------------------------------------------------------------

async function operationsPage() {
  page("Operations", `<h2>Pipeline</h2>
    <p id="redirects-busy" class="muted"></p>
    <div class="table-wrap"><table id="pipeline"><thead><tr><th>consumer</th><th class="num">pending</th><th class="num">ack pending</th><th class="num">lag (s)</th><th class="num">dead letters</th></tr></thead><tbody></tbody></table></div>
    <div class="stats">
      <div><h2>Lag (s), last 10 minutes</h2><div id="lag-chart" class="chart" role="img" aria-label="lag in seconds per consumer over the last ten minutes"></div></div>
      <div><h2>Pending, last 10 minutes</h2><div id="pending-chart" class="chart" role="img" aria-label="pending messages per consumer over the last ten minutes"></div></div>
    </div>
    <h2>Dead letters</h2>
    <div class="table-wrap"><table id="dlq"><thead><tr><th>seq</th><th>consumer</th><th class="hide-s">subject</th><th>error</th><th></th></tr></thead><tbody></tbody></table></div>
    <h2>Backfills</h2>
    <form id="backfill" class="row">
      <div><label for="bf-from">From</label><input id="bf-from" name="from" type="datetime-local" required></div>
      <div><label for="bf-to">To</label><input id="bf-to" name="to" type="datetime-local" required></div>
      <label class="inline"><input name="reclassify" type="checkbox"> Re-classify</label>
      <button type="submit">Start</button>
    </form>
    <div class="table-wrap"><table id="backfills"><thead><tr><th>id</th><th>state</th><th class="num">progress</th><th class="hide-s">range</th><th></th></tr></thead><tbody></tbody></table></div>`);
  const refresh = () => guarded(async () => {
    const p = await ops.pipeline();
    if (!$("#pipeline")) return;  // its page was left meanwhile
    // Redirects first: while a gateway says it is busy the click workers
    // hold off, so a growing lag is expected, up to their yield lag.
    const busy = p.redirects_busy;
    $("#redirects-busy").textContent = busy?.busy
      ? `Gateway ${busy.gateway} is busy (load ${busy.load.toFixed(2)}): the click workers hold off, up to ${busy.yield_lag_seconds} s behind, and catch up after.`
      : "No gateway is busy: the click workers take clicks as they come.";
    $("#pipeline tbody").innerHTML = p.consumers.map(c => `<tr><td>${esc(c.consumer)}</td><td class="num">${c.pending ?? ""}</td>
      <td class="num">${c.ack_pending ?? ""}</td><td class="num">${c.lag_seconds ?? ""}</td><td class="num">${c.dlq_depth ?? ""}</td></tr>`).join("");
    // Sampled by analytics every few seconds (GET /api/pipeline/history).
    const h = await ops.history();
    const names = p.consumers.map(c => c.consumer);
    const xs = h.items.map(i => Date.parse(i.ts) / 1000);
    const now = Date.now() / 1000;
    for (const [target, field] of [["#lag-chart", "lag_seconds"], ["#pending-chart", "pending"]]) {
      chart($(target), xs, names.map(n => [n, h.items.map(i => i.consumers[n]?.[field] ?? null)]), [now - 600, now]);
    }
    const d = await ops.dlq();
    if (!$("#dlq")) return;
    $("#dlq tbody").innerHTML = d.items.map(m => `<tr><td>${m.seq}</td><td>${esc(m.consumer)}</td>
      <td class="hide-s">${esc(m.headers["Linkflow-Original-Subject"])}</td><td>${esc(m.headers["Linkflow-Error"])}</td>
      <td><button type="button" data-replay="${m.seq}">Replay</button> <button type="button" class="secondary" data-discard="${m.seq}">Discard</button></td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">no dead letters</td></tr>`;
    const b = await ops.backfills();
    if (!$("#backfills")) return;
    $("#backfills tbody").innerHTML = b.items.map(i => `<tr><td>${esc(i.id)}</td><td>${esc(i.state)}</td><td class="num">${i.processed}/${i.total}</td>
      <td class="hide-s">${esc(when(i.from))} – ${esc(when(i.to))}</td>
      <td>${["pending", "running"].includes(i.state) ? `<button type="button" class="secondary" data-cancel="${esc(i.id)}">Cancel</button>` : ""}</td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">none yet</td></tr>`;
  });
  const onClick = e => {
    const t = e.target.dataset;
    const act = t.replay ? () => ops.replay(t.replay) : t.discard ? () => ops.discard(t.discard) : t.cancel ? () => ops.cancel(t.cancel) : null;
    if (act) guarded(async () => { await act(); await refresh(); });
  };
  view.addEventListener("click", onClick);
  leaving.push(() => view.removeEventListener("click", onClick));
  $("#backfill").addEventListener("submit", e => {
    e.preventDefault();
    const f = e.target.elements;
    guarded(async () => {
      await ops.backfill({from: new Date(f.from.value).toISOString(), to: new Date(f.to.value).toISOString(), reclassify: f.reclassify.checked});
      await refresh();
    }, e.target);
  });
  await refresh();
  const timer = setInterval(refresh, 5000);
  leaving.push(() => clearInterval(timer));
}

// -- start -----------------------------------------------------------------

$("#signin").addEventListener("submit", signIn);
$("#signout").addEventListener("click", () => signOut());
addEventListener("hashchange", route);
await configure();
if (key.get()) await start(); else signOut();
