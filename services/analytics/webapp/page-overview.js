// The overview (#/overview): the week's clicks, the top links, the week's
// orphan visits (requests that matched no link), links created.
import {stats} from "./api.js";
import {chart} from "./chart.js";
import {h, rows, table} from "./dom.js";
import {daysAgo, seconds} from "./format.js";
import {can, guarded, linkName, page, stat} from "./shell.js";

// Orphan visits by kind: the API's name, what the page calls it, its card's id.
const KINDS = [
  ["base_url", "visits to /", "orphans-base-url"],
  ["invalid_code", "paths that cannot be a code", "orphans-invalid-code"],
  ["not_found", "unknown or deleted codes", "orphans-not-found"],
];
const KIND_NAMES = Object.fromEntries(KINDS.map(([kind, label]) => [kind, label]));

export async function overviewPage() {
  const total = stat("clicks by people, 7 days", "total");
  const createdTotal = stat("links created, 30 days", "created-total");
  const orphans = stat("orphan visits, 7 days", "orphans-total");
  const kinds = KINDS.map(([, label, id]) => stat(label, id));
  const top = table({id: "top"}, ["link", ["clicks", "num"]]);
  const paths = table({id: "orphan-paths"}, ["path", "kind", ["visits", "num"]]);
  const created = h("div", {id: "created-chart", class: "chart", role: "img", "aria-label": "links created per day"});
  page(
    "Overview",
    h("div", {class: "stats"}, total, createdTotal),
    h("h2", {}, "Top links (7 days)"),
    top,
    h(
      "section",
      {id: "orphans", "aria-labelledby": "orphans-heading"},
      h("h2", {id: "orphans-heading"}, "Orphan visits (7 days)"),
      h("p", {class: "muted"}, "Requests to a short domain that matched no link."),
      h("div", {class: "stats"}, orphans, kinds),
      paths,
    ),
    h("h2", {}, "Links created per day (30 days)"),
    created,
  );
  const values = [total, createdTotal, orphans, ...kinds].map(card => card.lastChild);
  const [totalValue, createdValue, orphansValue, ...kindValues] = values;
  if (!can("stats:read")) {
    for (const value of values) value.textContent = "–";
    return;
  }
  const from = daysAgo(7);
  await guarded(async () => {
    const best = await stats.top({from, limit: 10});
    if (!top.isConnected) return; // its page was left meanwhile
    totalValue.textContent = best.items.reduce((n, i) => n + i.count, 0);
    rows(
      top.querySelector("tbody"),
      best.items,
      i => h("tr", {}, h("td", {}, linkName(i)), h("td", {class: "num"}, i.count)),
      "no clicks yet",
      2,
    );
    const lost = await stats.orphans({from});
    if (!paths.isConnected) return;
    orphansValue.textContent = lost.total;
    KINDS.forEach(([kind], i) => {
      kindValues[i].textContent = lost.kinds[kind];
    });
    rows(
      paths.querySelector("tbody"),
      lost.top_paths,
      p =>
        h("tr", {}, h("td", {class: "url"}, p.path), h("td", {}, KIND_NAMES[p.kind]), h("td", {class: "num"}, p.count)),
      "no orphan visits",
      3,
    );
    const days = (await stats.created({from: daysAgo(30).slice(0, 10)})).days;
    if (!created.isConnected) return;
    createdValue.textContent = days.reduce((n, d) => n + d.count, 0);
    chart(
      created,
      days.map(d => seconds(d.day)),
      [["links", days.map(d => d.count)]],
    );
  });
}
