// A link's form (#/links/new, #/links/CODE/edit[?domain=HOST]): created
// (on the domain picked, for a key that may list them) or edited.
import {ApiError, gatewayUrl, links} from "./api.js";
import {h} from "./dom.js";
import {isoTime, localTime} from "./format.js";
import {destinationsEditor, previewEditor, utmBuilder} from "./link-form-parts.js";
import {domainPicker, guarded, hint, linkHref, page} from "./shell.js";

const fields = (editing, parts) => [
  !editing && domainPicker("domain"),
  h("label", {for: "url"}, "Target URL"),
  parts.target,
  parts.utm.box,
  h("label", {for: "code"}, "Code ", hint("(empty: a random one)")),
  h("input", {id: "code", name: "code", pattern: "[A-Za-z0-9_-]{3,64}"}),
  h("label", {for: "redirect_type"}, "Redirect type"),
  h(
    "select",
    {id: "redirect_type", name: "redirect_type"},
    ["302", "301", "307", "308"].map(t => h("option", {}, t)),
  ),
  h("label", {for: "expires_at"}, "Expires ", hint("(local time, optional)")),
  h("input", {id: "expires_at", name: "expires_at", type: "datetime-local"}),
  h("label", {for: "max_visits"}, "Visit limit ", hint("(optional)")),
  h("input", {id: "max_visits", name: "max_visits", type: "number", min: 1}),
  h("label", {for: "tags"}, "Tags ", hint("(comma-separated)")),
  h("input", {id: "tags", name: "tags"}),
  h(
    "label",
    {class: "inline"},
    h("input", {id: "forward_query", name: "forward_query", type: "checkbox"}),
    " Forward the visitor's query string",
  ),
  h("label", {for: "rules"}, "Redirect rules ", hint('(JSON: [{"when": {"os": ["ios"]}, "url": "…"}])')),
  h("textarea", {id: "rules", name: "rules", spellcheck: "false"}, "[]"),
  parts.destinations.box,
  h("label", {for: "password"}, "Password ", hint(editing ? "(empty: unchanged)" : "(8–128 characters, optional)")),
  h("input", {id: "password", name: "password", type: "password", autocomplete: "new-password", maxlength: 128}),
  editing &&
    h(
      "label",
      {class: "inline", id: "remove-password-label", hidden: true},
      h("input", {id: "remove_password", name: "remove_password", type: "checkbox"}),
      " Remove the password",
    ),
  parts.preview.box,
];

function readForm(form, editing, parts) {
  const f = form.elements;
  const body = {
    url: f.url.value.trim(),
    redirect_type: Number(f.redirect_type.value),
    expires_at: isoTime(f.expires_at.value),
    max_visits: f.max_visits.value ? Number(f.max_visits.value) : null,
    tags: f.tags.value
      .split(",")
      .map(t => t.trim())
      .filter(Boolean),
    forward_query: f.forward_query.checked,
  };
  try {
    body.rules = JSON.parse(f.rules.value || "[]");
  } catch {
    throw new ApiError(422, {
      detail: "the redirect rules are not valid JSON",
      errors: [{field: "rules", message: "not valid JSON"}],
    });
  }
  body.destinations = parts.destinations.read();
  body.preview = parts.preview.read();
  // Write-only: sent when typed (or removed); an edit that leaves it empty keeps it.
  if (f.password.value) body.password = f.password.value;
  else if (editing && f.remove_password?.checked) body.password = null;
  if (!editing && f.code.value.trim()) body.code = f.code.value.trim();
  if (!editing && f.domain.value) body.domain = f.domain.value;
  return body;
}

export async function editPage(code, domain = null) {
  const target = h("input", {id: "url", name: "url", type: "url", required: true, size: 60});
  const parts = {
    target,
    utm: utmBuilder(target),
    destinations: destinationsEditor(),
    // The card shows the short URL's host: the domain picked, else the gateway's.
    preview: previewEditor(() => form.elements.domain?.value || domain || new URL(gatewayUrl("/")).host),
  };
  // Editing: the fields stay disabled until the link is loaded into them.
  const fieldset = h(
    "fieldset",
    {id: "fields", disabled: Boolean(code)},
    h("legend", {}, code ? "Link" : "New link"),
    fields(Boolean(code), parts),
  );
  const form = h(
    "form",
    {id: "link", class: "card", novalidate: true, onsubmit: save},
    fieldset,
    h(
      "p",
      {class: "row"},
      h("button", {type: "submit"}, code ? "Save" : "Create"),
      " ",
      h("a", {class: "button secondary", href: code ? linkHref(code, domain) : "#/links"}, "Cancel"),
    ),
  );
  page(code ? `Edit ${code}` : "New link", form);
  if (code) {
    const link = await guarded(() => links.get(code, domain));
    if (!link) return;
    const f = form.elements;
    f.url.value = link.url;
    f.code.value = link.code;
    f.redirect_type.value = String(link.redirect_type);
    f.expires_at.value = localTime(link.expires_at);
    f.max_visits.value = link.max_visits ?? "";
    f.tags.value = link.tags.join(", ");
    f.forward_query.checked = link.forward_query;
    f.rules.value = JSON.stringify(link.rules, null, 2);
    parts.utm.read();
    parts.destinations.fill(link.destinations);
    parts.preview.fill(link.preview);
    form.querySelector("#remove-password-label").hidden = !link.password_protected;
    f.password.placeholder = link.password_protected ? "protected: type to replace" : "";
    fieldset.disabled = false;
    f.code.disabled = true;
  }

  function save(event) {
    event.preventDefault();
    guarded(async () => {
      const body = readForm(form, Boolean(code), parts);
      const saved = code ? await links.update(code, domain, body) : await links.create(body);
      location.hash = linkHref(saved.code, saved.domain);
    }, form);
  }
}
