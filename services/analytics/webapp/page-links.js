// The links (#/links?q=…&tag=…&domain=…): searched and filtered (by
// domain too, for a key that may list them), a page at a time.
import {links} from "./api.js";
import {h, table} from "./dom.js";
import {when} from "./format.js";
import {can, copyButton, domainPicker, guarded, hashParams, linkName, page, tags} from "./shell.js";

const field = (id, label, attrs) => h("div", {}, h("label", {for: id}, label), h("input", {id, name: id, ...attrs}));

export async function linksPage() {
  const params = hashParams();
  const filter = h(
    "form",
    {id: "filter", class: "row", role: "search", onsubmit: search},
    field("q", "Search", {type: "search", value: params.get("q"), placeholder: "code or target"}),
    field("tag", "Tag", {value: params.get("tag")}),
    domainPicker("domain", {all: "all domains", selected: params.get("domain") ?? ""}),
    h("button", {type: "submit", class: "secondary"}, "Filter"),
    can("links:write") && h("a", {class: "button", href: "#/links/new"}, "New link"),
  );
  const list = table({id: "links"}, ["code", "target", ["tags", "hide-s"], ["created", "hide-s"], ""]);
  const more = h(
    "button",
    {type: "button", id: "more", class: "secondary", hidden: true, onclick: () => load()},
    "Next page",
  );
  page("Links", filter, list, h("p", {class: "row"}, more));
  const body = list.querySelector("tbody");
  let cursor = null;
  const load = () =>
    guarded(async () => {
      const query = {limit: 20};
      for (const name of ["q", "tag", "domain"]) if (params.get(name)) query[name] = params.get(name);
      if (cursor) query.cursor = cursor;
      const result = await links.list(query);
      body.append(...result.items.map(row));
      if (!body.children.length) body.append(h("tr", {}, h("td", {colspan: 5, class: "muted"}, "no links")));
      cursor = result.next_cursor;
      more.hidden = !cursor;
    });
  await load();
}

function search(event) {
  event.preventDefault();
  const f = new URLSearchParams([...new FormData(event.target)].filter(([, v]) => v));
  location.hash = `#/links?${f}`;
}

const row = l =>
  h(
    "tr",
    {},
    h("td", {}, linkName(l)),
    h("td", {class: "url"}, l.url),
    h("td", {class: "hide-s"}, tags(l.tags)),
    h("td", {class: "hide-s"}, when(l.created_at)),
    h("td", {}, copyButton(l.short_url)),
  );
