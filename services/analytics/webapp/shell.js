// What every page shares: the session's scopes, the alert and the errors,
// the page showing (its title, its view, what it must stop when left).
import {ApiError, domains, key} from "./api.js";
import {unplotAll} from "./chart.js";
import {$, h} from "./dom.js";

const view = $("#view");
let scopes = [];
let leaving = []; // what the current page must stop when another is shown
// Which page is showing: an answer that arrives after its page was left
// (the user moved on) is dropped, its error too.
let shown = 0;

export const can = scope => scopes.includes(scope);

export function signedIn(session) {
  scopes = session.scopes;
}

export function alertBox(message) {
  const box = $("#alert");
  box.textContent = message || "";
  box.hidden = !message;
}

// A form's field errors (of a former attempt) removed.
export function clearErrors(form) {
  for (const e of form.querySelectorAll(".field-error")) e.remove();
  for (const e of form.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
}

// Errors from the API: the problem's detail on top, field errors by their field.
function showError(err, form) {
  if (form) clearErrors(form);
  if (err instanceof ApiError && err.status === 401) {
    signOut(err.message);
    return;
  }
  alertBox(err.message);
  if (form && err.fields) {
    for (const [field, message] of Object.entries(err.fields)) {
      const name = field.split(/[.[]/)[0];
      const input = form.elements[name];
      const p = h("p", {class: "field-error", id: `error-${name}`}, `${field}: ${message}`);
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", p.id);
        input.after(p);
      } else form.prepend(p);
    }
  }
}

// work's answer, or undefined when it failed: its error shown (by the
// form's fields, if a form) unless its page was left meanwhile.
export async function guarded(work, form) {
  const mine = shown;
  try {
    alertBox("");
    return await work();
  } catch (err) {
    if (mine === shown) showError(err, form);
    return undefined;
  }
}

// A new page in the view: its title and its elements.
export function page(title, ...children) {
  document.title = `${title} · linkflow`;
  view.replaceChildren(h("h1", {}, title), ...children);
}

// What to stop (a timer, a stream) when this page is left.
export function onLeave(stop) {
  leaving.push(stop);
}

export function stopPage() {
  shown += 1;
  for (const stop of leaving) stop();
  leaving = [];
  unplotAll();
}

export function signOut(why = "") {
  key.clear();
  scopes = [];
  stopPage();
  $("#nav").hidden = $("#who").hidden = $("#signout").hidden = true;
  $("#signin").hidden = false;
  view.replaceChildren();
  alertBox(why);
  if (location.hash) history.replaceState(null, "", location.pathname);
  $("#key").focus();
}

// A button that copies a short URL (or another text: what names it).
export function copyButton(url, label = `copy ${url}`, what = "the short URL") {
  const button = h(
    "button",
    {type: "button", class: "secondary copy", "aria-label": label, onclick: () => copy(button, url, what)},
    "Copy",
  );
  return button;
}

async function copy(button, url, what) {
  try {
    await navigator.clipboard.writeText(url);
    button.textContent = "Copied";
  } catch {
    // No clipboard (an insecure origin): select the text for the user instead.
    prompt(`Copy ${what}`, url);
  }
}

// The params of the address's route (#/links?q=…, #/links/CODE?domain=…).
export const hashParams = () => new URLSearchParams(location.hash.split("?")[1] || "");

// The link to a link's page (action "/edit": its form); a link is named by
// its code and its domain (null: the default domain, left out).
export function linkHref(code, domain = null, action = "") {
  const on = domain ? `?${new URLSearchParams({domain})}` : "";
  return `#/links/${encodeURIComponent(code)}${action}${on}`;
}

// A link in a list: its code, to its page, and its domain unless the default.
export const linkName = l => [
  h("a", {href: linkHref(l.code, l.domain)}, l.code),
  l.domain && h("div", {class: "muted"}, l.domain),
];

// A choice of domain (their list needs an admin key), hidden while there is
// one only, or none listed. Its values are hosts; "" is all domains (all,
// what it is called) or, with no all, the default domain (no domain sent).
export function domainPicker(id, {all = "", selected = ""} = {}) {
  const select = h("select", {id, name: "domain"});
  const picker = h("div", {hidden: true}, h("label", {for: id}, "Domain"), select);
  if (!can("admin")) return picker;
  guarded(async () => {
    const {items} = await domains.list();
    const value = d => (d.is_default && !all ? "" : d.host);
    const options = items.map(d =>
      h("option", {value: value(d), selected: value(d) === selected}, d.is_default ? `${d.host} (default)` : d.host),
    );
    if (all) options.unshift(h("option", {value: ""}, all));
    select.replaceChildren(...options);
    picker.hidden = items.length < 2;
  });
  return picker;
}

// A muted note beside a label.
export const hint = text => h("span", {class: "muted"}, text);

// A link's tags.
export const tags = names => names.map(t => h("span", {class: "tag"}, t));

// A card with one big number (its last child), "…" until it is known.
export const stat = (label, id) =>
  h("div", {class: "card"}, h("div", {class: "muted"}, label), h("div", {class: "big", id}, "…"));
