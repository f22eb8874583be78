// What every page shares: the session's scopes, the alert and the errors,
// the page showing (its title, its view, what it must stop when left).
import {ApiError, key} from "./api.js";
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

// Errors from the API: the problem's detail on top, field errors by their field.
function showError(err, form) {
  if (form) for (const e of form.querySelectorAll(".field-error")) e.remove();
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

// The link to a link's page.
export const linkHref = code => `#/links/${encodeURIComponent(code)}`;

// A link's tags.
export const tags = names => names.map(t => h("span", {class: "tag"}, t));

// A card with one big number (its last child), "…" until it is known.
export const stat = (label, id) =>
  h("div", {class: "card"}, h("div", {class: "muted"}, label), h("div", {class: "big", id}, "…"));
