// Preview deployments: each branch, pull request or ref built and served as its own
// release at its own hostname. List (with links to the hostnames), create (or redeploy in
// place, with env overrides as KEY=value lines) and delete.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton } from "../dom.js";
import { badge, ago, until, shortSha, table } from "../format.js";

const TTLS = [["", "Server default"], ["1d", "1 day"], ["3d", "3 days"], ["7d", "7 days"], ["30d", "30 days"]];

/**
 * The env overrides typed as `KEY=value` lines (blank lines and `#` comments skipped; the
 * value is everything after the first `=`, kept as typed). Keys are the API's to judge;
 * only a line that cannot be a pair, or a key given twice, is refused here.
 */
export function parseEnvLines(text, what = "env") {
  const env = {};
  const lines = text.split("\n");
  for (const [index, raw] of lines.entries()) {
    const line = raw.replace(/\r$/, "");
    if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
    const at = line.indexOf("=");
    const key = at < 0 ? "" : line.slice(0, at).trim();
    if (!key) throw new Error(`${what} line ${index + 1} is not KEY=value: “${line.trim()}”`);
    if (Object.hasOwn(env, key)) throw new Error(`${what} line ${index + 1}: ${key} is given twice`);
    env[key] = line.slice(at + 1);
  }
  return env;
}

export async function previewsSection({ project, base, signal }) {
  const path = `/v1/projects/${seg(project.id)}/previews`;
  const canEdit = session.can("deploy");
  const list = h("div", { "data-testid": "preview-list" });
  const out = outcome();
  let timer = null;

  const load = async () => {
    const { previews } = await api.get(path, { signal });
    replace(list, table("Previews", ["Hostname", "Source", "Status", "Deploy", "Updated", "Expires", ...(canEdit ? ["Actions"] : [])],
      previews.map((preview) => h("tr", { "data-preview": preview.id, "data-status": preview.status },
        h("th", { scope: "row", class: "mono" },
          h("a", { href: preview.url, rel: "noopener noreferrer", target: "_blank" }, preview.hostname)),
        h("td", {}, preview.branch ? ["branch ", h("span", { class: "mono" }, preview.branch)] : ["ref ", h("span", { class: "mono" }, preview.ref)],
          preview.pullRequest ? ` · PR #${preview.pullRequest}` : null,
          preview.commitSha ? h("p", { class: "subtle mono" }, shortSha(preview.commitSha)) : null),
        h("td", {}, badge(preview.status)),
        h("td", { class: "mono" }, preview.deployId
          ? [h("a", { href: `${base}/deploys/${seg(preview.deployId)}` }, preview.deployId), " ", badge(preview.deployStatus)]
          : "—"),
        h("td", {}, ago(preview.updatedAt)),
        h("td", {}, until(preview.expiresAt)),
        canEdit ? h("td", {}, confirmButton(["Delete", h("span", { class: "visually-hidden" }, ` ${preview.hostname}`)],
          `Delete ${preview.hostname}`, async () => {
            try {
              await api.delete(`${path}/${seg(preview.id)}`, { signal });
              out.ok(`${preview.hostname} deleted.`);
              await load();
            } catch (error) { out.error(error); }
          }, { class: "secondary" })) : null)),
      "No previews. They are created by pull requests and pushes the webhook reports, or here."));
    // While one builds, the list follows it.
    clearTimeout(timer);
    if (previews.some((p) => p.status === "building" || p.status === "updating") && !signal.aborted) {
      timer = setTimeout(() => load().catch((error) => out.error(error)), 2000);
    }
  };
  signal.addEventListener("abort", () => clearTimeout(timer));
  await load();

  let form = null;
  if (canEdit) {
    form = h("form", { class: "inline-form", "data-testid": "preview-form" },
      field("Branch", { name: "branch", autocomplete: "off", spellcheck: "false", placeholder: "feature/login" }),
      field("or a tag or commit", { name: "ref", autocomplete: "off", spellcheck: "false" }),
      field("Pull request", { name: "pullRequest", type: "number", min: 1, step: 1, inputmode: "numeric" }),
      field("Removed when idle for", { tag: "select", name: "ttl", options: TTLS, value: "" }),
      h("div", { class: "field-row" },
        field("Env overrides", { tag: "textarea", name: "env", rows: 3, autocomplete: "off", spellcheck: "false",
          placeholder: "API_BASE=https://staging.example.com", "data-testid": "preview-env" },
          "One KEY=value per line, on top of the project's env for this preview only.")),
      h("button", { type: "submit", class: "primary" }, "Create preview"),
      out.node);
    onSubmit(form, out, async ({ branch, ref, pullRequest, ttl, env }) => {
      const body = {};
      if (branch.trim()) body.branch = branch.trim();
      if (ref.trim()) body.ref = ref.trim();
      if (pullRequest) body.pullRequest = Number(pullRequest);
      if (ttl) body.ttl = ttl;
      const overrides = parseEnvLines(env);
      if (Object.keys(overrides).length > 0) body.env = overrides;
      const preview = await api.post(path, body, { signal });
      form.reset();
      out.ok(`${preview.hostname}: deploy ${preview.deployId ?? ""} queued.`);
      await load();
    });
  }
  return h("section", { "aria-labelledby": "previews-title" },
    h("h2", { id: "previews-title" }, "Previews"),
    h("p", { class: "hint" }, "Each preview is built and served on its own hostname with the project's env (production-only keys left out), and removed after its idle time."),
    list, canEdit ? h("h3", {}, "Preview a branch or ref") : out.node, form);
}
