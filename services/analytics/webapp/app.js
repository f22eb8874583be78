// linkflow's web app: plain modules, no build step (docs/api/index.md, "The web app").
// This one signs in and out and shows the page the address names; each
// page is a module of its own (page-*.js), what they share is in shell.js,
// dom.js (building elements), format.js, chart.js and api.js.
import {configure, key, stats} from "./api.js";
import {$} from "./dom.js";
import {domainsPage} from "./page-domains.js";
import {editPage} from "./page-edit.js";
import {importPage} from "./page-import.js";
import {linkPage} from "./page-link.js";
import {linksPage} from "./page-links.js";
import {operationsPage} from "./page-operations.js";
import {overviewPage} from "./page-overview.js";
import {webhooksPage} from "./page-webhooks.js";
import {alertBox, can, hashParams, signedIn, signOut, stopPage} from "./shell.js";

async function signIn(event) {
  event.preventDefault();
  const input = $("#key");
  key.set(input.value.trim());
  input.value = "";
  await start();
}

async function start() {
  try {
    const session = await stats.session();
    signedIn(session);
    $("#who").textContent = session.name ? `signed in as ${session.name}` : "signed in";
  } catch (err) {
    key.clear();
    $("#signin").hidden = false;
    alertBox(err.message);
    return;
  }
  $("#signin").hidden = true;
  $("#nav").hidden = $("#who").hidden = $("#signout").hidden = false;
  for (const a of document.querySelectorAll("#nav a[data-scope]")) a.hidden = !can(a.dataset.scope);
  alertBox("");
  route();
}

// #/overview, #/links[?q=…&tag=…&domain=…], #/links/new,
// #/links/CODE[/edit][?domain=HOST] (no domain: the default one), #/import,
// #/operations, #/webhooks, #/domains; anything else is the overview.
function pageFor(parts) {
  const [section, code, action] = parts;
  if (section === "links") {
    const domain = hashParams().get("domain");
    if (code === "new") return () => editPage(null);
    if (action === "edit") return () => editPage(code, domain);
    return code ? () => linkPage(code, domain) : linksPage;
  }
  if (section === "import") return importPage;
  if (section === "operations") return operationsPage;
  if (section === "domains") return domainsPage;
  if (section === "webhooks") return webhooksPage;
  return overviewPage;
}

function route() {
  if (!key.get()) return;
  stopPage();
  alertBox("");
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (path.startsWith(a.getAttribute("href").slice(1))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  pageFor(path.split("/").filter(Boolean).map(decodeURIComponent))();
  $("#main").focus({preventScroll: true});
}

$("#signin").addEventListener("submit", signIn);
$("#signout").addEventListener("click", () => signOut());
addEventListener("hashchange", route);
await configure();
if (key.get()) await start();
else signOut();
