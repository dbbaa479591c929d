// A project's overview: the latest deploy, scale controls and the running instances,
// refreshed every few seconds while shown.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, errorBox } from "../dom.js";
import { badge, ago, shortSha, refLabel, table } from "../format.js";

/** The default size tiers; an operator may configure others, which the API then accepts. */
const SIZES = ["nano", "small", "medium", "large"];

export async function overviewSection({ project, base, signal, refreshHeader }) {
  const latest = h("div", { "data-testid": "latest-deploy" });
  const instances = h("div", { "data-testid": "instances" });

  const drawLatest = async () => {
    const page = await api.get(`/v1/projects/${seg(project.id)}/deploys?limit=1`, { signal });
    const deploy = page.deploys[0];
    replace(latest, deploy
      ? h("p", {}, h("a", { href: `${base}/deploys/${seg(deploy.id)}` }, "Latest deploy"), " ",
        badge(deploy.status), " ", refLabel(deploy.ref), h("span", { class: "mono" }, shortSha(deploy.commitSha)),
        " · ", ago(deploy.createdAt),
        deploy.error ? h("span", { class: "error-text" }, ` · ${deploy.failedStep ?? "failed"}: ${deploy.error}`) : null)
      : h("p", { class: "empty" }, "Never deployed. ",
        h("a", { href: `${base}/git` }, "Connect a repository"), session.can("deploy") ? ", then press Deploy now." : "."));
  };
  const drawInstances = async () => {
    const found = await api.get(`/v1/projects/${seg(project.id)}/instances`, { signal });
    replace(instances, table("Instances", ["Instance", "State", "Deploy", "Size", "Restarts", "Started", "Address"],
      found.instances.map((i) => h("tr", { "data-instance-state": i.state },
        h("th", { scope: "row", class: "mono" }, i.name),
        h("td", {}, badge(i.state)),
        h("td", { class: "mono" }, h("a", { href: `${base}/deploys/${seg(i.deployId)}` }, i.deployId)),
        h("td", {}, i.size ?? "—"),
        h("td", {}, String(i.restartCount)),
        h("td", {}, ago(i.startedAt)),
        h("td", { class: "mono" }, i.address ?? "—"))),
      "No instances are running."));
  };
  const refresh = () => Promise.all([drawLatest(), drawInstances()]);
  await refresh().catch((error) => replace(instances, errorBox(error)));
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") refresh().catch(() => {});
  }, 5000);
  signal.addEventListener("abort", () => clearInterval(timer));

  return h("div", { class: "grid" },
    h("section", { class: "card", "aria-labelledby": "latest-title" },
      h("h2", { id: "latest-title" }, "Deploys"), latest),
    scaleCard(project, signal, async () => { await refreshHeader(); await refresh(); }),
    h("section", { class: "card wide", "aria-labelledby": "instances-title" },
      h("h2", { id: "instances-title" }, "Instances"), instances));
}

function scaleCard(project, signal, after) {
  const current = h("p", { "data-testid": "scale-current" },
    project.instances === 0 ? "Stopped (0 instances)." : `${project.instances} instance${project.instances === 1 ? "" : "s"} of size ${project.size}.`);
  if (!session.can("deploy")) {
    return h("section", { class: "card", "aria-labelledby": "scale-title" }, h("h2", { id: "scale-title" }, "Scale"), current);
  }
  const out = outcome();
  const listId = "size-options";
  const form = h("form", { class: "inline-form", "data-testid": "scale-form" },
    field("Instances", { name: "instances", type: "number", min: 0, max: 100, step: 1, value: String(project.instances), required: true, inputmode: "numeric" }),
    field("Size", { name: "size", value: project.size, list: listId, required: true, autocomplete: "off", spellcheck: "false" }),
    h("datalist", { id: listId }, SIZES.map((size) => h("option", { value: size }))),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    out.node);
  onSubmit(form, out, async ({ instances, size }) => {
    out.show(h("p", { role: "status" }, "Scaling: new instances start and pass their health check first…"));
    const updated = await api.post(`/v1/projects/${seg(project.id)}/scale`, { instances: Number(instances), size: size.trim() }, { signal });
    Object.assign(project, updated);
    replace(current, updated.instances === 0 ? "Stopped (0 instances)." : `${updated.instances} instance${updated.instances === 1 ? "" : "s"} of size ${updated.size}.`);
    out.ok(`Scaled to ${updated.instances} × ${updated.size}.`);
    await after();
  });
  return h("section", { class: "card", "aria-labelledby": "scale-title" },
    h("h2", { id: "scale-title" }, "Scale"), current,
    h("p", { class: "hint" }, "Applied without a rebuild; 0 stops the project."), form);
}
