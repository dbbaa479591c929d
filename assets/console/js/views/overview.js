// A project's overview: the latest deploy, scale controls (web instances and size, and a
// count per Procfile process type) and the running instances with their process type,
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
    replace(instances, table("Instances", ["Instance", "Process", "State", "Deploy", "Size", "Restarts", "Started", "Address"],
      found.instances.map((i) => h("tr", { "data-instance-state": i.state, "data-process": i.process, "data-instance": i.id },
        h("th", { scope: "row", class: "mono" }, i.name),
        h("td", {}, h("span", { class: "tag", title: i.process === "web" ? "takes traffic" : "runs beside web; never routed" }, i.process)),
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
  const types = await processTypes(project, signal).catch(() => []);
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") refresh().catch(() => {});
  }, 5000);
  signal.addEventListener("abort", () => clearInterval(timer));

  return h("div", { class: "grid" },
    h("section", { class: "card", "aria-labelledby": "latest-title" },
      h("h2", { id: "latest-title" }, "Deploys"), latest),
    scaleCard(project, signal, async () => { await refreshHeader(); await refresh(); }),
    types.length ? processCard(project, types, signal, async () => { await refreshHeader(); await refresh(); }) : null,
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
    field("Web instances", { name: "instances", type: "number", min: 0, max: 100, step: 1, value: String(project.instances), required: true, inputmode: "numeric" }),
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

/**
 * The Procfile process types besides `web` this project runs or was given a count for:
 * those of the serving release's plan, of the running instances, and of earlier scaling.
 */
async function processTypes(project, signal) {
  const [page, found] = await Promise.all([
    api.get(`/v1/projects/${seg(project.id)}/deploys?limit=20`, { signal }),
    api.get(`/v1/projects/${seg(project.id)}/instances`, { signal }),
  ]);
  const serving = page.deploys.find((d) => d.status === "running");
  const names = new Set([
    ...Object.keys(serving?.plan?.processes ?? {}),
    ...found.instances.map((i) => i.process),
    ...Object.keys(project.processes ?? {}),
  ]);
  names.delete("web");
  return [...names].sort();
}

/** A type never scaled runs one instance (the API's rule). */
const countOf = (project, type) => project.processes?.[type] ?? 1;

function processCard(project, types, signal, after) {
  const counts = h("ul", { class: "plain-list", "data-testid": "process-counts" });
  const drawCounts = () => replace(counts, types.map((type) => h("li", { "data-process": type },
    h("span", { class: "tag" }, type), ` ${countOf(project, type)} instance${countOf(project, type) === 1 ? "" : "s"}`)));
  drawCounts();
  const heading = h("h2", { id: "processes-title" }, "Process types");
  const hint = h("p", { class: "hint" }, "Procfile types other than web run in their own containers and are never routed; 0 stops a type.");
  if (!session.can("deploy")) {
    return h("section", { class: "card", "aria-labelledby": "processes-title" }, heading, hint, counts);
  }
  const out = outcome();
  const form = h("form", { class: "inline-form", "data-testid": "process-form" },
    types.map((type) => field(`${type} instances`, { name: `process-${type}`, type: "number", min: 0, max: 100, step: 1,
      value: String(countOf(project, type)), required: true, inputmode: "numeric" })),
    h("button", { type: "submit", class: "primary" }, "Apply counts"),
    out.node);
  onSubmit(form, out, async (values) => {
    // Only the types whose count changed, so a concurrent change to another is kept.
    const processes = Object.fromEntries(types
      .map((type) => [type, Number(values[`process-${type}`])])
      .filter(([type, count]) => count !== countOf(project, type)));
    if (Object.keys(processes).length === 0) {
      out.ok("Nothing changed.");
      return;
    }
    out.show(h("p", { role: "status" }, "Scaling the process types…"));
    const updated = await api.post(`/v1/projects/${seg(project.id)}/scale`, { processes }, { signal });
    Object.assign(project, updated);
    drawCounts();
    out.ok(`Scaled ${Object.entries(processes).map(([type, count]) => `${type} to ${count}`).join(", ")}.`);
    await after();
  });
  return h("section", { class: "card", "aria-labelledby": "processes-title" }, heading, hint, counts, form);
}
