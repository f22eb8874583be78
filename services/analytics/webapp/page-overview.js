// The overview (#/overview): the week's clicks, the top links, links created.
import {stats} from "./api.js";
import {chart} from "./chart.js";
import {h, rows, table} from "./dom.js";
import {daysAgo, seconds} from "./format.js";
import {can, guarded, linkHref, page, stat} from "./shell.js";

export async function overviewPage() {
  const total = stat("clicks by people, 7 days", "total");
  const createdTotal = stat("links created, 30 days", "created-total");
  const top = table({id: "top"}, ["link", ["clicks", "num"]]);
  const created = h("div", {id: "created-chart", class: "chart", role: "img", "aria-label": "links created per day"});
  page(
    "Overview",
    h("div", {class: "stats"}, total, createdTotal),
    h("h2", {}, "Top links (7 days)"),
    top,
    h("h2", {}, "Links created per day (30 days)"),
    created,
  );
  const [totalValue, createdValue] = [total.lastChild, createdTotal.lastChild];
  if (!can("stats:read")) {
    totalValue.textContent = "–";
    createdValue.textContent = "–";
    return;
  }
  await guarded(async () => {
    const best = await stats.top({from: daysAgo(7), limit: 10});
    if (!top.isConnected) return; // its page was left meanwhile
    totalValue.textContent = best.items.reduce((n, i) => n + i.count, 0);
    rows(
      top.querySelector("tbody"),
      best.items,
      i => h("tr", {}, h("td", {}, h("a", {href: linkHref(i.code)}, i.code)), h("td", {class: "num"}, i.count)),
      "no clicks yet",
      2,
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
