// The charts (uPlot, vendored): redrawn in place when their data is
// reloaded, all removed when the page is left.
import {h} from "./dom.js";
import uPlot from "./vendor/uplot/uPlot.esm.js";

const COLOURS = ["#0b57d0", "#b3261e", "#137333", "#8430ce", "#b06000"];
const HEIGHT = 240;

// The charts showing, each with what removes it.
const plots = new Map();

function unplot(target) {
  plots.get(target)?.();
  plots.delete(target);
}

// Every chart removed (its page is being left).
export function unplotAll() {
  for (const target of [...plots.keys()]) unplot(target);
}

// xs (seconds) against each series ([label, ys]) in target; window
// ([from, to] in seconds) fixes the time axis.
export function chart(target, xs, series, window = null) {
  if (!target?.isConnected) return; // its page was left meanwhile
  unplot(target);
  if (!xs.length) {
    target.replaceChildren(h("p", {class: "muted"}, "no data in this range"));
    return;
  }
  target.replaceChildren();
  const width = () => Math.max(target.clientWidth, 280);
  const plot = new uPlot(
    {
      width: width(),
      height: HEIGHT,
      scales: window ? {x: {time: true, range: () => window}} : {},
      series: [{}, ...series.map(([label], i) => ({label, stroke: COLOURS[i], width: 2}))],
      axes: [{}, {}],
    },
    [xs, ...series.map(([, ys]) => ys)],
    target,
  );
  const resize = () => plot.setSize({width: width(), height: HEIGHT});
  addEventListener("resize", resize);
  plots.set(target, () => {
    removeEventListener("resize", resize);
    plot.destroy();
  });
}
