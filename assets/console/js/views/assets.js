// The static assets of the live release (a static site's files, or a container app's
// assets directory) with their size, type, SHA-256 and cache policy, filtered by path.

import { api, seg } from "../api.js";
import { h, field, outcome, replace } from "../dom.js";
import { bytes, table } from "../format.js";

export async function assetsSection({ project, base, signal }) {
  const path = `/v1/projects/${seg(project.id)}/assets`;
  const rows = [];
  const list = h("div", { "data-testid": "asset-list" });
  const facts = h("p", { class: "subtle", "data-testid": "asset-deploy" });
  const more = h("div");
  const out = outcome();
  const form = h("form", { class: "inline-form filters one-field", "aria-label": "Filter assets", role: "search" },
    field("Path starts with", { name: "prefix", type: "search", autocomplete: "off", spellcheck: "false", placeholder: "css/" }),
    h("button", { type: "submit", class: "secondary" }, "Filter"));

  const draw = () => replace(list, table("Assets", ["Path", "Type", "Size", "SHA-256", "Cache-Control"], rows, "No assets in the live release."));
  const load = async (cursor) => {
    const params = new URLSearchParams({ limit: "100" });
    const prefix = form.elements.prefix.value.trim();
    if (prefix) params.set("prefix", prefix);
    if (cursor) params.set("cursor", cursor);
    const page = await api.get(`${path}?${params}`, { signal });
    if (!cursor) rows.length = 0;
    rows.push(...page.assets.map((asset) => h("tr", { "data-path": asset.path },
      h("th", { scope: "row", class: "mono" }, asset.path),
      h("td", {}, asset.contentType),
      h("td", {}, bytes(asset.sizeBytes)),
      h("td", { class: "mono", title: asset.sha256 }, `${asset.sha256.slice(0, 12)}…`),
      h("td", { class: "mono" }, asset.cacheControl))));
    draw();
    replace(facts, page.deployId
      ? ["Files of the live release ", h("a", { class: "mono", href: `${base}/deploys/${seg(page.deployId)}` }, page.deployId), "."]
      : "Nothing is live: no assets.");
    replace(more, page.nextCursor
      ? h("button", { type: "button", class: "secondary", onclick: () => load(page.nextCursor).catch((e) => out.error(e)) }, "Show more")
      : null);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    out.clear();
    load(null).catch((error) => out.error(error));
  });
  await load(null);
  return h("section", { "aria-labelledby": "assets-title" },
    h("h2", { id: "assets-title" }, "Assets"), facts, form, out.node, list, more);
}
