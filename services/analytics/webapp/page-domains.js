// The short domains (#/domains, admin keys): listed, added (with the
// redirects a visit that matches no link gets), their redirects changed,
// deleted (the gateway refuses the default domain and one with links, and
// says why). The gateway's API.
import {domains} from "./api.js";
import {h, rows, table} from "./dom.js";
import {when} from "./format.js";
import {clearErrors, guarded, hint, page} from "./shell.js";

// A domain's redirects, as inputs whose ids start with prefix.
const redirectFields = prefix => [
  h("label", {for: `${prefix}-base`}, "Base URL redirect ", hint("(where / goes; empty: none)")),
  h("input", {id: `${prefix}-base`, name: "base_url_redirect", type: "url", size: 60}),
  h(
    "label",
    {for: `${prefix}-not-found`},
    "Not-found redirect ",
    hint("(where a code with no link goes; empty: none)"),
  ),
  h("input", {id: `${prefix}-not-found`, name: "not_found_redirect", type: "url", size: 60}),
];

// The redirects a form sets: an empty one is none (null).
const redirects = form => ({
  base_url_redirect: form.elements.base_url_redirect.value.trim() || null,
  not_found_redirect: form.elements.not_found_redirect.value.trim() || null,
});

const redirect = url => (url ? h("span", {class: "url"}, url) : hint("none"));

export async function domainsPage() {
  const status = h("p", {id: "domains-status", role: "status", class: "muted"});
  const list = table({id: "domains"}, ["host", "base URL redirect", "not-found redirect", ["changed", "hide-s"], ""]);
  const heading = h("h2", {});
  const edit = h(
    "form",
    {id: "edit-domain", class: "card", novalidate: true, hidden: true, onsubmit: save},
    heading,
    redirectFields("ed"),
    h(
      "p",
      {class: "row"},
      h("button", {type: "submit"}, "Save redirects"),
      h("button", {type: "button", class: "secondary", onclick: () => close()}, "Cancel"),
    ),
  );
  const form = h(
    "form",
    {id: "new-domain", class: "card", novalidate: true, onsubmit: create},
    h("p", {}, "Point the host's DNS at linkflow's gateways first; its links are then made on it by picking it."),
    h("label", {for: "dm-host"}, "Host ", hint("(such as go.example.com)")),
    h("input", {id: "dm-host", name: "host", required: true, size: 40}),
    redirectFields("dm"),
    h("p", {class: "row"}, h("button", {type: "submit"}, "Add domain")),
  );
  page("Domains", status, list, edit, h("h2", {}, "New domain"), form);
  const body = list.querySelector("tbody");
  let editing = null; // the host whose redirects the form shows

  const load = () =>
    guarded(async () => {
      const all = await domains.list();
      if (!list.isConnected) return; // its page was left meanwhile
      rows(body, all.items, row, "no domains", 5);
    });

  const row = d =>
    h(
      "tr",
      {"data-host": d.host},
      h("td", {}, d.host, d.is_default && [" ", h("span", {class: "tag"}, "default")]),
      h("td", {class: "url"}, redirect(d.base_url_redirect)),
      h("td", {class: "url"}, redirect(d.not_found_redirect)),
      h("td", {class: "hide-s"}, when(d.updated_at)),
      h(
        "td",
        {class: "actions"},
        h(
          "button",
          {type: "button", class: "secondary", "aria-label": `edit the redirects of ${d.host}`, onclick: () => open(d)},
          "Edit redirects",
        ),
        " ",
        !d.is_default &&
          h(
            "button",
            {type: "button", class: "danger", "aria-label": `delete ${d.host}`, onclick: () => remove(d)},
            "Delete",
          ),
      ),
    );

  function open(d) {
    editing = d.host;
    clearErrors(edit);
    heading.textContent = `Redirects of ${d.host}`;
    edit.elements.base_url_redirect.value = d.base_url_redirect ?? "";
    edit.elements.not_found_redirect.value = d.not_found_redirect ?? "";
    edit.hidden = false;
    edit.elements.base_url_redirect.focus();
  }

  function close() {
    editing = null;
    edit.hidden = true;
  }

  function create(event) {
    event.preventDefault();
    guarded(async () => {
      // Redirects left empty are not sent (none).
      const set = Object.entries(redirects(form)).filter(([, url]) => url);
      const made = await domains.create({host: form.elements.host.value.trim(), ...Object.fromEntries(set)});
      form.reset();
      clearErrors(form);
      status.textContent = `Domain ${made.host} added.`;
      await load();
    }, form);
  }

  function save(event) {
    event.preventDefault();
    const host = editing;
    guarded(async () => {
      await domains.update(host, redirects(edit));
      close();
      status.textContent = `The redirects of ${host} were saved.`;
      await load();
    }, edit);
  }

  function remove(d) {
    if (!confirm(`Delete the domain ${d.host}? linkflow stops answering for it.`)) return;
    guarded(async () => {
      await domains.remove(d.host);
      if (editing === d.host) close();
      status.textContent = `Domain ${d.host} deleted.`;
      await load();
    });
  }

  await load();
}
