// Building the page's elements: h() makes an element from a tag, its
// attributes and its children, every text set as text (never parsed as
// HTML), so nothing from the APIs has to be escaped by hand.

// One element: h("a", {href: "#/links", class: "button"}, "New link").
// Attributes: null, undefined and false leave it out, true sets it empty,
// "on…" adds a listener (onclick, onsubmit).
// Children: elements, or anything else shown as its text (numbers too);
// arrays are spread, null, undefined and false left out.
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...nodes(children));
  return element;
}

function nodes(children) {
  return children
    .flat(Infinity)
    .filter(c => c !== null && c !== undefined && c !== false)
    .map(c => (c instanceof Node ? c : String(c)));
}

// The first element matching a selector.
export const $ = (selector, root = document) => root.querySelector(selector);

// A table's rows replaced by one per item, or by one row saying there are
// none (spanning every column).
export function rows(tbody, items, row, empty = "", columns = 1) {
  const made = items.map(row);
  if (!made.length && empty) made.push(h("tr", {}, h("td", {colspan: columns, class: "muted"}, empty)));
  tbody.replaceChildren(...made);
}

// A table: its header cells (a string, or [text, class]) and an empty body.
export function table(attrs, headers) {
  return h(
    "div",
    {class: "table-wrap"},
    h(
      "table",
      attrs,
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          headers.map(c => (Array.isArray(c) ? h("th", {class: c[1]}, c[0]) : h("th", {}, c))),
        ),
      ),
      h("tbody"),
    ),
  );
}

// A fetched file saved by the browser, under the name its answer gives
// (Content-Disposition), else fallback: the API needs the key, so a plain
// link cannot download it.
export async function save(response, fallback) {
  const disposition = response.headers.get("content-disposition") || "";
  const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] || fallback;
  const url = URL.createObjectURL(await response.blob());
  const a = h("a", {href: url, download: name, hidden: true});
  document.body.append(a);
  a.click();
  a.remove();
  // After the click has handed the file to the browser.
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
