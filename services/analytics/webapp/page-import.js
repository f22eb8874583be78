// The import (#/import): links from a CSV file, each refused row reported.
import {links} from "./api.js";
import {h, rows, table} from "./dom.js";
import {guarded, linkHref, page} from "./shell.js";

export function importPage() {
  const report = h("div", {id: "report"});
  const form = h(
    "form",
    {id: "import", class: "card", onsubmit: upload},
    h(
      "p",
      {},
      "A CSV file with a header line ",
      h("code", {}, "url,code"),
      " (code may be empty). Every good row is imported; every refused row is reported with its line.",
    ),
    h("label", {for: "file"}, "CSV file"),
    h("input", {id: "file", name: "file", type: "file", accept: ".csv,text/csv", required: true}),
    h("p", {class: "row"}, h("button", {type: "submit"}, "Import")),
  );
  page("Import links", form, report);

  function upload(event) {
    event.preventDefault();
    guarded(async () => {
      const file = form.elements.file.files[0];
      const r = await links.import(await file.text());
      const refused = table({id: "import-errors"}, ["line", "why it was refused"]);
      rows(refused.querySelector("tbody"), r.errors, x => h("tr", {}, h("td", {}, x.line), h("td", {}, x.message)));
      report.replaceChildren(
        h(
          "p",
          {role: "status"},
          h("strong", {}, r.imported),
          ` imported, ${r.skipped} skipped, ${r.errors.length} refused.`,
        ),
        refused,
        h(
          "ul",
          {},
          r.links.map(l => h("li", {}, h("a", {href: linkHref(l.code, l.domain)}, l.short_url))),
        ),
      );
    }, form);
  }
}
