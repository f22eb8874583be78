// The operations (#/operations): the pipeline's consumers and their lag,
// the dead letters (replayed or discarded), the backfills.
import {ops} from "./api.js";
import {chart} from "./chart.js";
import {h, rows, table} from "./dom.js";
import {isoTime, seconds, when} from "./format.js";
import {guarded, onLeave, page} from "./shell.js";

const REFRESH = 5000;
const WINDOW = 600; // seconds of history the charts show

const graph = (title, id, label) =>
  h("div", {}, h("h2", {}, title), h("div", {id, class: "chart", role: "img", "aria-label": label}));

const picker = (id, name, label) =>
  h("div", {}, h("label", {for: id}, label), h("input", {id, name, type: "datetime-local", required: true}));

export async function operationsPage() {
  const busy = h("p", {id: "redirects-busy", class: "muted"});
  const pipeline = table({id: "pipeline"}, [
    "consumer",
    ["pending", "num"],
    ["ack pending", "num"],
    ["lag (s)", "num"],
    ["dead letters", "num"],
  ]);
  const lag = graph("Lag (s), last 10 minutes", "lag-chart", "lag in seconds per consumer over the last ten minutes");
  const pending = graph(
    "Pending, last 10 minutes",
    "pending-chart",
    "pending messages per consumer over the last ten minutes",
  );
  const dlq = table({id: "dlq"}, ["seq", "consumer", ["subject", "hide-s"], "error", ""]);
  const backfill = h(
    "form",
    {id: "backfill", class: "row", onsubmit: start},
    picker("bf-from", "from", "From"),
    picker("bf-to", "to", "To"),
    h("label", {class: "inline"}, h("input", {name: "reclassify", type: "checkbox"}), " Re-classify"),
    h("button", {type: "submit"}, "Start"),
  );
  const backfills = table({id: "backfills"}, ["id", "state", ["progress", "num"], ["range", "hide-s"], ""]);
  page(
    "Operations",
    h("h2", {}, "Pipeline"),
    busy,
    pipeline,
    h("div", {class: "stats"}, lag, pending),
    h("h2", {}, "Dead letters"),
    dlq,
    h("h2", {}, "Backfills"),
    backfill,
    backfills,
  );
  const body = wrap => wrap.querySelector("tbody");
  // A button's action, then the page refreshed.
  const act = work => () =>
    guarded(async () => {
      await work();
      await refresh();
    });

  const refresh = () =>
    guarded(async () => {
      const p = await ops.pipeline();
      if (!pipeline.isConnected) return; // its page was left meanwhile
      // Redirects first: while a gateway says it is busy the click workers
      // hold off, so a growing lag is expected, up to their yield lag.
      const b = p.redirects_busy;
      busy.textContent = b?.busy
        ? `Gateway ${b.gateway} is busy (load ${b.load.toFixed(2)}): the click workers hold off, up to ${b.yield_lag_seconds} s behind, and catch up after.`
        : "No gateway is busy: the click workers take clicks as they come.";
      rows(body(pipeline), p.consumers, c =>
        h(
          "tr",
          {},
          h("td", {}, c.consumer),
          [c.pending, c.ack_pending, c.lag_seconds, c.dlq_depth].map(n => h("td", {class: "num"}, n ?? "")),
        ),
      );
      // Sampled by analytics every few seconds (GET /api/pipeline/history).
      const history = await ops.history();
      const names = p.consumers.map(c => c.consumer);
      const xs = history.items.map(i => seconds(i.ts));
      const now = Date.now() / 1000;
      for (const [target, field] of [
        [lag.lastChild, "lag_seconds"],
        [pending.lastChild, "pending"],
      ]) {
        const series = names.map(n => [n, history.items.map(i => i.consumers[n]?.[field] ?? null)]);
        chart(target, xs, series, [now - WINDOW, now]);
      }
      const d = await ops.dlq();
      if (!dlq.isConnected) return;
      rows(
        body(dlq),
        d.items,
        m =>
          h(
            "tr",
            {},
            h("td", {}, m.seq),
            h("td", {}, m.consumer),
            h("td", {class: "hide-s"}, m.headers["Linkflow-Original-Subject"]),
            h("td", {}, m.headers["Linkflow-Error"]),
            h(
              "td",
              {},
              h("button", {type: "button", onclick: act(() => ops.replay(m.seq))}, "Replay"),
              " ",
              h("button", {type: "button", class: "secondary", onclick: act(() => ops.discard(m.seq))}, "Discard"),
            ),
          ),
        "no dead letters",
        5,
      );
      const all = await ops.backfills();
      if (!backfills.isConnected) return;
      rows(
        body(backfills),
        all.items,
        i =>
          h(
            "tr",
            {},
            h("td", {}, i.id),
            h("td", {}, i.state),
            h("td", {class: "num"}, `${i.processed}/${i.total}`),
            h("td", {class: "hide-s"}, `${when(i.from)} – ${when(i.to)}`),
            h(
              "td",
              {},
              ["pending", "running"].includes(i.state) &&
                h("button", {type: "button", class: "secondary", onclick: act(() => ops.cancel(i.id))}, "Cancel"),
            ),
          ),
        "none yet",
        5,
      );
    });

  function start(event) {
    event.preventDefault();
    const f = backfill.elements;
    guarded(async () => {
      await ops.backfill({from: isoTime(f.from.value), to: isoTime(f.to.value), reclassify: f.reclassify.checked});
      await refresh();
    }, backfill);
  }

  await refresh();
  const timer = setInterval(refresh, REFRESH);
  onLeave(() => clearInterval(timer));
}
