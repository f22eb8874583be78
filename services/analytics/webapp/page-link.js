// A link (#/links/CODE[?domain=HOST], no domain: the default one): what it
// is, its QR code, its clicks (counted live as they come), its history.
import {exports, follow, links, stats} from "./api.js";
import {chart} from "./chart.js";
import {$, h, rows, save, table} from "./dom.js";
import {daysAgo, isoTime, localTime, seconds, when} from "./format.js";
import {can, copyButton, guarded, linkHref, onLeave, page, stat, tags} from "./shell.js";

// The dimensions of a link's clicks: the API's list, and each row's field.
const DIMENSIONS = [
  ["referrers", "referrer"],
  ["countries", "country"],
  ["devices", "device"],
  ["browsers", "browser"],
  ["oses", "os"],
];

const picker = (id, label) =>
  h("div", {}, h("label", {for: id}, label), h("input", {id, name: id, type: "datetime-local"}));

export async function linkPage(code, domain = null) {
  // Set once the key may read stats (below); the export buttons call it.
  let download = () => undefined;
  const summary = h("div", {id: "summary", class: "card"});
  const range = h(
    "form",
    {id: "range", class: "row"},
    picker("from", "From"),
    picker("to", "To"),
    h(
      "div",
      {},
      h("label", {for: "interval"}, "Per"),
      h(
        "select",
        {id: "interval", name: "interval"},
        h("option", {value: "hour"}, "hour"),
        h("option", {value: "day"}, "day"),
      ),
    ),
    h("label", {class: "inline"}, h("input", {id: "bots", name: "bots", type: "checkbox"}), " Show bots"),
    h("button", {type: "submit", class: "secondary"}, "Show"),
    h(
      "button",
      {type: "button", class: "secondary", id: "export-figures", onclick: () => download("figures")},
      "Export figures (CSV)",
    ),
    exports.hasClicks() &&
      h(
        "button",
        {type: "button", class: "secondary", id: "export-clicks", onclick: () => download("clicks")},
        "Export clicks (CSV)",
      ),
  );
  const clicks = stat("clicks in range", "clicks");
  const visitors = stat("unique visitors", "visitors");
  const live = h(
    "div",
    {class: "card"},
    h("div", {class: "muted", id: "live-state"}, "live: connecting…"),
    h("div", {class: "big", id: "live", "aria-live": "polite"}, "0"),
  );
  const plot = h("div", {id: "chart", class: "chart", role: "img", "aria-label": "clicks over time"});
  const dims = h("div", {class: "stats", id: "dims"});
  const split = table({id: "split"}, ["destination", ["weight", "num"], ["clicks", "num"], ["visitors", "num"]]);
  split.hidden = true;
  const history = table({id: "history"}, ["version", "changed", "by", "target", ["limit", "hide-s"], ""]);
  page(
    code,
    summary,
    h("h2", {}, "Clicks"),
    range,
    h("div", {class: "stats"}, clicks, visitors, live),
    plot,
    split,
    dims,
    h("h2", {}, "History"),
    history,
  );

  const link = await guarded(() => links.get(code, domain));
  if (!link) return;
  summary.replaceChildren(...describe(link));
  const qr = await guarded(() => links.qr(code, domain));
  if (qr) {
    const url = URL.createObjectURL(await qr.blob());
    $("#qr", summary).src = url;
    onLeave(() => URL.revokeObjectURL(url));
  }
  const versions = await guarded(() => links.history(code, domain));
  if (versions) {
    rows(history.querySelector("tbody"), versions.items, v =>
      h(
        "tr",
        {},
        h("td", {}, v.version),
        h("td", {}, when(v.updated_at)),
        h("td", {}, v.changed_by ?? ""),
        h("td", {class: "url"}, v.url),
        h("td", {class: "hide-s"}, v.max_visits ?? ""),
        h("td", {}, v.deleted_at ? "deleted" : ""),
      ),
    );
  }
  if (!can("stats:read")) return;

  const f = range.elements;
  f.from.value = localTime(daysAgo(7));
  // The range as the form says it, for the figures and their exports alike.
  const chosen = () => {
    const query = {interval: f.interval.value, include_bots: f.bots.checked, domain};
    if (f.from.value) query.from = isoTime(f.from.value);
    if (f.to.value) query.to = isoTime(f.to.value);
    return query;
  };
  // The figures of the range (analytics), or its raw clicks (a click-recorder).
  download = what =>
    guarded(async () => {
      const {from, to} = chosen();
      const answer =
        what === "figures"
          ? await exports.figures(code, chosen())
          : await exports.clicks({from, to, code, domain, format: "csv"});
      await save(answer, `${code}-${what}.csv`);
    }, range);
  const load = () =>
    guarded(async () => {
      const s = await stats.link(code, chosen());
      if (!range.isConnected) return; // its page was left meanwhile
      clicks.lastChild.textContent = s.total;
      visitors.lastChild.textContent = s.visitors;
      const xs = s.series.map(p => seconds(p.ts));
      chart(plot, xs, [
        ["clicks", s.series.map(p => p.count)],
        ["visitors", s.series.map(p => p.visitors)],
      ]);
      dims.replaceChildren(...DIMENSIONS.map(([name, field]) => dimension(s, name, field)));
      showSplit(split, link, s);
    }, range);
  range.addEventListener("submit", event => {
    event.preventDefault();
    load();
  });
  await load();

  // The live counter counts clicks as they are redirected; the aggregates
  // behind the chart follow a moment later, so they are reloaded after one.
  const abort = new AbortController();
  const [liveState, counter] = live.children;
  let pending = null;
  onLeave(() => {
    abort.abort();
    clearTimeout(pending);
  });
  const lost = () => {
    if (!abort.signal.aborted) liveState.textContent = "live: not connected";
  };
  const counted = click => {
    if (click.is_bot && !f.bots.checked) return;
    counter.textContent = Number(counter.textContent) + 1;
    clearTimeout(pending);
    pending = setTimeout(load, 700);
  };
  follow({code, domain}, counted, abort.signal, () => {
    liveState.textContent = "live, since this page opened";
  }).then(lost, lost);
  const timer = setInterval(load, 10000);
  onLeave(() => clearInterval(timer));
}

// The summary of a link: its short URL and target, how it redirects, its
// QR code (filled in once fetched), what the key may do with it.
function describe(link) {
  const notes = [
    link.redirect_type,
    `version ${link.version}`,
    link.max_visits && `at most ${link.max_visits} visits`,
    link.expires_at && `expires ${when(link.expires_at)}`,
    link.forward_query && "forwards the query",
    link.rules.length && `${link.rules.length} rule(s)`,
    link.destinations && `A/B split over ${link.destinations.length} destinations`,
    link.password_protected && "password protected",
    link.preview && "social preview",
  ].filter(Boolean);
  const write = can("links:write");
  return [
    h(
      "p",
      {},
      h("strong", {}, "Short URL"),
      " ",
      h("a", {href: link.short_url}, link.short_url),
      " ",
      copyButton(link.short_url, "copy the short URL"),
    ),
    h("p", {}, h("strong", {}, "Target"), " ", h("span", {class: "url"}, link.url)),
    h("p", {class: "muted"}, notes.join(" · "), " ", tags(link.tags)),
    h("img", {class: "qr", id: "qr", alt: `QR code of ${link.short_url}`}),
    h(
      "p",
      {class: "row"},
      write && h("a", {class: "button", href: linkHref(link.code, link.domain, "/edit")}, "Edit"),
      write && h("button", {type: "button", class: "danger", id: "delete", onclick: () => remove(link)}, "Delete"),
    ),
  ];
}

function remove(link) {
  if (!confirm(`Delete ${link.code}? Its short URL stops working.`)) return;
  guarded(async () => {
    await links.remove(link.code, link.domain);
    location.hash = "#/links";
  });
}

// One dimension's table: the most clicked ten, and the clicks of the rest.
function dimension(s, name, field) {
  const items = s[name].map(r => h("tr", {}, h("td", {}, r[field] ?? "(none)"), h("td", {class: "num"}, r.count)));
  if (!items.length) items.push(h("tr", {}, h("td", {class: "muted"}, "none")));
  // The API lists the most clicked ten; the clicks of the rest, summed.
  const others = s.others?.[name];
  if (others)
    items.push(h("tr", {class: "others"}, h("td", {class: "muted"}, "others"), h("td", {class: "num"}, others)));
  return h("div", {}, h("h2", {}, name), h("table", {}, h("tbody", {}, items)));
}

// An A/B split's figures: each destination's clicks and visitors in the
// range, by its place in the link's list (hidden for a link without one).
function showSplit(split, link, s) {
  split.hidden = !link.destinations;
  if (!link.destinations) return;
  const counted = new Map(s.destinations.map(d => [d.destination, d]));
  rows(split.querySelector("tbody"), link.destinations, (d, i) =>
    h(
      "tr",
      {},
      h("td", {class: "url"}, d.url),
      h("td", {class: "num"}, d.weight),
      h("td", {class: "num"}, counted.get(i)?.count ?? 0),
      h("td", {class: "num"}, counted.get(i)?.visitors ?? 0),
    ),
  );
}
