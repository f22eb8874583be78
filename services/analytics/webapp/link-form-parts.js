// The link form's richer parts: the UTM builder beside the target, the A/B
// destinations editor, and the social preview with the card a chat app shows.
import {h} from "./dom.js";
import {hint} from "./shell.js";

// ---- UTM builder: utm_* parameters written into the target as they are typed ----

export const UTM = ["source", "medium", "campaign", "term", "content"];

// The target with each UTM parameter set (or removed when empty); the target
// as it is when it is not a URL yet (the user is still typing it).
export function withUtm(target, values) {
  let url;
  try {
    url = new URL(target);
  } catch {
    return target;
  }
  for (const name of UTM) {
    const value = (values[name] ?? "").trim();
    if (value) url.searchParams.set(`utm_${name}`, value);
    else url.searchParams.delete(`utm_${name}`);
  }
  return url.toString();
}

// The UTM parameters a target already carries.
export function utmOf(target) {
  try {
    const params = new URL(target).searchParams;
    return Object.fromEntries(UTM.map(name => [name, params.get(`utm_${name}`) ?? ""]));
  } catch {
    return Object.fromEntries(UTM.map(name => [name, ""]));
  }
}

// The builder: five fields under the target field; typing in one rewrites the
// target, and a target typed or loaded fills them.
export function utmBuilder(target) {
  const inputs = UTM.map(name =>
    h("input", {id: `utm_${name}`, name: `utm_${name}`, placeholder: name, "aria-label": `utm_${name}`}),
  );
  const write = () => {
    target.value = withUtm(target.value.trim(), Object.fromEntries(UTM.map((name, i) => [name, inputs[i].value])));
  };
  for (const input of inputs) input.addEventListener("input", write);
  const read = () => {
    const values = utmOf(target.value.trim());
    UTM.forEach((name, i) => {
      inputs[i].value = values[name];
    });
  };
  target.addEventListener("change", read);
  const box = h(
    "details",
    {id: "utm", class: "utm"},
    h("summary", {}, "UTM parameters ", hint("(added to the target URL as you type)")),
    h("div", {class: "utm-fields"}, inputs),
  );
  return {box, read};
}

// ---- A/B destinations: 2–10 targets drawn by weight ----

export function destinationsEditor() {
  const list = h("div", {id: "destinations", class: "destinations"});
  const row = (d = {url: "", weight: 1}) => {
    const n = list.children.length + 1;
    const line = h(
      "div",
      {class: "destination row"},
      h("input", {
        type: "url",
        name: "destination_url",
        value: d.url,
        size: 44,
        placeholder: "https://…",
        "aria-label": `destination ${n} URL`,
      }),
      h("input", {
        type: "number",
        name: "destination_weight",
        min: 1,
        max: 1000,
        value: d.weight,
        class: "weight",
        "aria-label": `destination ${n} weight`,
      }),
      h("button", {type: "button", class: "secondary", onclick: () => line.remove()}, "Remove"),
    );
    list.append(line);
  };
  const box = h(
    "div",
    {},
    h("span", {class: "label"}, "A/B destinations ", hint("(2–10 URLs drawn by weight; none: the target alone)")),
    list,
    h("button", {type: "button", class: "secondary", id: "add-destination", onclick: () => row()}, "Add a destination"),
  );
  return {
    box,
    fill: destinations => {
      list.replaceChildren();
      for (const d of destinations ?? []) row(d);
    },
    // null when no row has a URL: the link has no split.
    read: () => {
      const made = [...list.children]
        .map(line => ({
          url: line.querySelector("[name=destination_url]").value.trim(),
          weight: Number(line.querySelector("[name=destination_weight]").value || 1),
        }))
        .filter(d => d.url);
      return made.length ? made : null;
    },
  };
}

// ---- Social preview: what Slack, WhatsApp or X show for the short URL ----

export function previewEditor(shortHost) {
  const title = h("input", {id: "preview_title", name: "preview_title", maxlength: 200, size: 60});
  const description = h("textarea", {id: "preview_description", name: "preview_description", maxlength: 500});
  const image = h("input", {id: "preview_image", name: "preview_image", type: "url", size: 60});
  const card = h(
    "figure",
    {id: "preview-card", class: "preview-card", hidden: true, "aria-label": "how a chat app shows the link"},
    h("img", {alt: ""}),
    h("figcaption", {}, h("span", {class: "muted host"}), h("strong", {}), h("span", {class: "description"})),
  );
  const draw = () => {
    const [img, caption] = card.children;
    const [host, heading, text] = caption.children;
    host.textContent = shortHost();
    heading.textContent = title.value || "(no title)";
    text.textContent = description.value;
    const src = image.value.trim();
    // Only an http(s) image, as the gateway accepts; the CSP decides whether it loads.
    img.hidden = !/^https?:\/\//i.test(src);
    if (!img.hidden) img.src = src;
    else img.removeAttribute("src");
    card.hidden = !(title.value || description.value || src);
  };
  for (const input of [title, description, image]) input.addEventListener("input", draw);
  const box = h(
    "details",
    {id: "preview"},
    h("summary", {}, "Social preview ", hint("(what chat apps and social sites show for the short URL)")),
    h("label", {for: "preview_title"}, "Title"),
    title,
    h("label", {for: "preview_description"}, "Description"),
    description,
    h("label", {for: "preview_image"}, "Image URL"),
    image,
    card,
  );
  return {
    box,
    fill: preview => {
      title.value = preview?.title ?? "";
      description.value = preview?.description ?? "";
      image.value = preview?.image ?? "";
      box.open = Boolean(preview);
      draw();
    },
    // null when every field is empty: no custom preview.
    read: () => {
      const fields = {title: title.value.trim(), description: description.value.trim(), image: image.value.trim()};
      const set = Object.entries(fields).filter(([, v]) => v);
      return set.length ? Object.fromEntries(set) : null;
    },
    draw,
  };
}
