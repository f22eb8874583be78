// The webhooks (#/webhooks): the endpoints (created, enabled or disabled,
// deleted, their secret rotated, a test event sent), and one endpoint's
// deliveries with their attempts, retried on demand. The webhooks
// service's API (config.webhooks). A secret is shown once, when the API
// answers it (created, rotated), and never again.
import {webhooks} from "./api.js";
import {h, rows, table} from "./dom.js";
import {when} from "./format.js";
import {clearErrors, copyButton, guarded, hint, onLeave, page, tags} from "./shell.js";

const EVENTS = ["link.created", "link.updated", "link.deleted", "link.clicked"];
const STATUSES = ["pending", "delivered", "failed"];
const REFRESH = 3000; // while a delivery shown is pending

const commaList = text =>
  text
    .split(",")
    .map(t => t.trim())
    .filter(Boolean);

const newForm = onsubmit =>
  h(
    "form",
    {id: "new-endpoint", class: "card", novalidate: true, onsubmit},
    h("label", {for: "wh-url"}, "Endpoint URL"),
    h("input", {id: "wh-url", name: "url", type: "url", required: true, size: 60}),
    h(
      "fieldset",
      {name: "events"},
      h("legend", {}, "Events"),
      h("p", {class: "label", "aria-hidden": "true"}, "Events"),
      EVENTS.map(e =>
        h(
          "label",
          {class: "inline"},
          h("input", {type: "checkbox", name: "event", value: e, checked: e === "link.clicked"}),
          ` ${e}`,
        ),
      ),
    ),
    h("label", {for: "wh-codes"}, "Codes ", hint("(comma-separated; empty: every link)")),
    h("input", {id: "wh-codes", name: "codes"}),
    h("label", {for: "wh-tags"}, "Tags ", hint("(comma-separated; empty: any tag)")),
    h("input", {id: "wh-tags", name: "tags"}),
    h("label", {for: "wh-description"}, "Description ", hint("(optional)")),
    h("input", {id: "wh-description", name: "description", size: 60}),
    h("p", {class: "row"}, h("button", {type: "submit"}, "Create endpoint")),
  );

// An endpoint's filters: what it receives of the events it subscribes to.
function filters(e) {
  const parts = [
    e.codes.length && ["codes ", tags(e.codes)],
    e.tags.length && ["tags ", tags(e.tags)],
    e.domains.length && ["domains ", tags(e.domains)],
  ].filter(Boolean);
  return parts.length ? parts.map(p => h("div", {}, p)) : h("span", {class: "muted"}, "every link");
}

const state = e =>
  e.enabled ? "enabled" : h("span", {class: "bad"}, "disabled", e.disabled_reason ? `: ${e.disabled_reason}` : "");

// The last answer of a delivery's receiver: its status code, or why none.
const outcome = (code, error) => [code ? `HTTP ${code}` : "", code && error ? " · " : "", error || ""];

export async function webhooksPage() {
  const status = h("p", {id: "webhooks-status", role: "status", class: "muted"});
  const secret = h("div", {id: "secret", class: "card secret", hidden: true});
  const endpoints = table({id: "endpoints"}, ["url", "events", ["filters", "hide-s"], "state", ""]);
  const form = newForm(create);
  const deliveries = h("section", {id: "deliveries-section", hidden: true});
  const attempts = h("section", {id: "attempts-section", hidden: true});
  page(
    "Webhooks",
    status,
    secret,
    h("h2", {}, "Endpoints"),
    endpoints,
    deliveries,
    attempts,
    h("h2", {}, "New endpoint"),
    form,
  );
  const body = endpoints.querySelector("tbody");
  let shown = []; // the endpoints listed
  let selected = null; // the endpoint whose deliveries are shown
  let cursor = null;
  let paged = false; // a second page loaded: no refresh replaces it

  // The secret, once: the API answers it only at creation and rotation.
  function reveal(endpoint, value, why) {
    secret.replaceChildren(
      h("h2", {}, `${why}: the signing secret of ${endpoint.url}`),
      h("p", {}, h("strong", {}, "Shown once: store it now."), " It is never shown again (rotate it for a new one)."),
      h(
        "p",
        {class: "row"},
        h("code", {id: "secret-value"}, value),
        " ",
        copyButton(value, "copy the secret", "the secret"),
      ),
      h("button", {type: "button", class: "secondary", onclick: hide}, "I have stored it"),
    );
    secret.hidden = false;
    secret.scrollIntoView({block: "nearest"});
  }
  function hide() {
    secret.replaceChildren();
    secret.hidden = true;
  }

  const load = () =>
    guarded(async () => {
      const all = await webhooks.list();
      if (!endpoints.isConnected) return; // its page was left meanwhile
      shown = all.items;
      rows(body, shown, row, "no endpoints yet", 5);
      // The endpoint whose deliveries show, as it is now; gone: none shown.
      selected = shown.find(e => e.id === selected?.id) ?? null;
      if (!selected) deliveries.hidden = attempts.hidden = true;
    });

  const row = e =>
    h(
      "tr",
      {class: selected?.id === e.id ? "selected" : null},
      h(
        "td",
        {class: "url"},
        h(
          "button",
          {type: "button", class: "linklike", "aria-label": `deliveries of ${e.url}`, onclick: () => select(e)},
          e.url,
        ),
        e.description && h("div", {class: "muted"}, e.description),
      ),
      h("td", {}, e.events.join(", ")),
      h("td", {class: "hide-s"}, filters(e)),
      h("td", {}, state(e)),
      h(
        "td",
        {class: "actions"},
        h("button", {type: "button", class: "secondary", onclick: () => test(e)}, "Send test event"),
        " ",
        h(
          "button",
          {type: "button", class: "secondary", onclick: () => act(() => webhooks.update(e.id, {enabled: !e.enabled}))},
          e.enabled ? "Disable" : "Enable",
        ),
        " ",
        h("button", {type: "button", class: "secondary", onclick: () => rotate(e)}, "Rotate secret"),
        " ",
        h("button", {type: "button", class: "danger", onclick: () => remove(e)}, "Delete"),
      ),
    );

  // A button's action, then the endpoints (and the deliveries shown) refreshed.
  const act = work =>
    guarded(async () => {
      await work();
      await load();
      if (selected) await deliveriesOf(selected);
    });

  function create(event) {
    event.preventDefault();
    const f = form.elements;
    guarded(async () => {
      const made = await webhooks.create({
        url: f.url.value.trim(),
        events: [...form.querySelectorAll("input[name=event]:checked")].map(i => i.value),
        codes: commaList(f.codes.value),
        tags: commaList(f.tags.value),
        description: f.description.value.trim(),
      });
      form.reset();
      clearErrors(form);
      reveal(made, made.secret, "Created");
      status.textContent = `Endpoint ${made.url} created.`;
      await load();
    }, form);
  }

  function rotate(e) {
    if (!confirm(`Rotate the secret of ${e.url}? The old one keeps signing beside the new one for 24 hours.`)) return;
    guarded(async () => {
      const r = await webhooks.rotate(e.id);
      reveal(e, r.secret, "Rotated");
      status.textContent = `The secret of ${e.url} was rotated.`;
    });
  }

  function remove(e) {
    if (!confirm(`Delete the endpoint ${e.url} and its deliveries?`)) return;
    act(async () => {
      await webhooks.remove(e.id);
      if (selected?.id === e.id) selected = null;
      status.textContent = `Endpoint ${e.url} deleted.`;
    });
  }

  function test(e) {
    guarded(async () => {
      const r = await webhooks.test(e.id);
      status.textContent = `Test event ${r.id} queued for ${e.url}.`;
      await select(e);
    });
  }

  // ---- one endpoint's deliveries ----

  const filter = h(
    "select",
    {id: "delivery-status", name: "status", onchange: () => selected && select(selected)},
    h("option", {value: ""}, "all"),
    STATUSES.map(s => h("option", {value: s}, s)),
  );
  const history = table({id: "deliveries"}, [
    ["created", "hide-s"],
    "event",
    "status",
    ["attempts", "num"],
    "last answer",
    ["next attempt", "hide-s"],
    "",
  ]);
  const more = h(
    "button",
    {type: "button", id: "more-deliveries", class: "secondary", hidden: true, onclick: () => nextPage()},
    "More",
  );
  const heading = h("h2", {});
  deliveries.append(
    heading,
    h(
      "div",
      {class: "row"},
      h("div", {}, h("label", {for: "delivery-status"}, "Status"), filter),
      h("button", {type: "button", class: "secondary", onclick: () => selected && select(selected)}, "Refresh"),
    ),
    history,
    h("p", {class: "row"}, more),
  );
  const dbody = history.querySelector("tbody");

  async function select(e) {
    if (selected?.id !== e.id) attempts.hidden = true; // another endpoint's
    selected = e;
    for (const tr of body.children) tr.classList.remove("selected");
    body.children[shown.findIndex(x => x.id === e.id)]?.classList.add("selected");
    heading.textContent = `Deliveries to ${e.url}`;
    deliveries.hidden = false;
    await deliveriesOf(e);
  }

  const query = () => ({limit: 50, ...(filter.value ? {status: filter.value} : {}), ...(cursor ? {cursor} : {})});

  // The first page again (newest first).
  const deliveriesOf = e =>
    guarded(async () => {
      cursor = null;
      const r = await webhooks.deliveries(e.id, query());
      if (!history.isConnected || selected?.id !== e.id) return;
      paged = false;
      rows(dbody, r.items, d => delivery(e, d), "no deliveries", 7);
      cursor = r.next_cursor;
      more.hidden = !cursor;
    });

  const nextPage = () =>
    guarded(async () => {
      const e = selected;
      const r = await webhooks.deliveries(e.id, query());
      if (!history.isConnected || selected?.id !== e.id) return;
      paged = true;
      dbody.append(...r.items.map(d => delivery(e, d)));
      cursor = r.next_cursor;
      more.hidden = !cursor;
    });

  const delivery = (e, d) =>
    h(
      "tr",
      {"data-id": d.id},
      h("td", {class: "hide-s"}, when(d.created_at)),
      h("td", {}, d.event_type),
      h("td", {class: `status-${d.status}`}, d.status),
      h("td", {class: "num"}, d.attempts),
      h("td", {class: "url"}, outcome(d.last_status_code, d.last_error)),
      h("td", {class: "hide-s"}, when(d.next_attempt_at)),
      h(
        "td",
        {class: "actions"},
        h(
          "button",
          {type: "button", class: "secondary", "aria-label": `attempts of ${d.id}`, onclick: () => open(e, d.id)},
          "Attempts",
        ),
        " ",
        d.status !== "pending" &&
          h("button", {type: "button", "aria-label": `retry ${d.id}`, onclick: () => retry(e, d.id)}, "Retry"),
      ),
    );

  function retry(e, id) {
    guarded(async () => {
      await webhooks.retry(e.id, id);
      status.textContent = `Delivery ${id} is pending again.`;
      await deliveriesOf(e);
    });
  }

  // ---- one delivery's attempts ----

  const attemptsTable = table({id: "attempts"}, [["#", "num"], "at", ["ms", "num"], "status code", "error"]);
  const attemptsHeading = h("h2", {});
  const summary = h("p", {id: "delivery-summary", class: "muted"});
  attempts.append(attemptsHeading, summary, attemptsTable);

  const open = (e, id) =>
    guarded(async () => {
      const d = await webhooks.delivery(e.id, id);
      if (!attemptsTable.isConnected) return;
      attemptsHeading.textContent = `Attempts of ${d.id}`;
      summary.textContent = [
        `${d.event_type} to ${e.url}`,
        d.status,
        `created ${when(d.created_at)}`,
        d.next_attempt_at && `next attempt ${when(d.next_attempt_at)}`,
      ]
        .filter(Boolean)
        .join(" · ");
      rows(
        attemptsTable.querySelector("tbody"),
        d.attempt_log,
        a =>
          h(
            "tr",
            {},
            h("td", {class: "num"}, a.n),
            h("td", {}, when(a.at)),
            h("td", {class: "num"}, a.duration_ms),
            h("td", {}, a.status_code ?? ""),
            h("td", {class: "url"}, a.error ?? ""),
          ),
        "no attempt yet",
        5,
      );
      attempts.hidden = false;
    });

  await load();
  // Pending deliveries change on their own: the first page follows them.
  const timer = setInterval(() => {
    if (selected && !paged && !deliveries.hidden && dbody.querySelector(".status-pending")) deliveriesOf(selected);
  }, REFRESH);
  onLeave(() => clearInterval(timer));
}
