// The projects list (with each project's status) and the form that creates one.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, errorBox } from "../dom.js";
import { badge, ago, table } from "../format.js";

const RUNTIMES = [["", "Detect from the source"], ["dockerfile", "Dockerfile"], ["static", "Static site"],
  ["node", "Node"], ["python", "Python"], ["go", "Go"], ["rust", "Rust"], ["ruby", "Ruby"], ["php", "PHP"]];

export { RUNTIMES };

export async function projectsView({ signal }) {
  const list = h("div", { "data-testid": "project-list" });
  const more = h("div");
  const rows = [];
  const load = async (cursor) => {
    const query = cursor ? `?cursor=${seg(cursor)}` : "";
    const page = await api.get(`/v1/projects${query}`, { signal });
    rows.push(...page.projects.map(row));
    replace(list, table("Projects", ["Project", "Status", "Hostname", "Instances", "Updated"], rows,
      session.can("deploy") ? "No projects yet. Create one to deploy your first app." : "No projects yet."));
    replace(more, page.nextCursor
      ? h("button", { type: "button", class: "secondary", onclick: () => load(page.nextCursor).catch((e) => replace(more, errorBox(e))) }, "Show more projects")
      : null);
  };
  await load(null);
  // Statuses change as deploys run: refresh the first page while the list is shown.
  const timer = setInterval(async () => {
    if (document.visibilityState !== "visible" || rows.length > 50) return;
    try {
      const page = await api.get("/v1/projects", { signal });
      rows.splice(0, rows.length, ...page.projects.map(row));
      replace(list, table("Projects", ["Project", "Status", "Hostname", "Instances", "Updated"], rows));
    } catch { /* the next tick tries again */ }
  }, 5000);
  signal.addEventListener("abort", () => clearInterval(timer));

  return h("section", {},
    h("div", { class: "page-head" },
      // Element Timing names the first render of the list for scripts/bench/console.sh.
      h("h1", { tabindex: "-1", elementtiming: "projects" }, "Projects"),
      session.can("deploy") && h("a", { class: "button primary", href: "/projects/new", "data-testid": "new-project" }, "New project")),
    list, more);
}

function row(project) {
  return h("tr", { "data-project": project.name },
    h("th", { scope: "row" }, h("a", { href: `/projects/${seg(project.id)}` }, project.name)),
    h("td", {}, badge(project.status)),
    h("td", { class: "mono" }, project.hostname),
    h("td", {}, project.instances === 0 ? "stopped" : `${project.instances} × ${project.size}`),
    h("td", {}, ago(project.updatedAt)));
}

export async function newProjectView({ navigate }) {
  if (!session.can("deploy")) {
    return h("section", {}, h("h1", { tabindex: "-1" }, "New project"),
      errorBox({ message: `creating a project needs a deploy token; this one has the \`${session.account.scope}\` scope` }));
  }
  const out = outcome();
  const form = h("form", { class: "card narrow" },
    field("Name", { name: "name", required: true, autocomplete: "off", spellcheck: "false", maxlength: 63, "data-testid": "project-name" },
      "Lowercase letters, digits and hyphens; it becomes part of the project's hostname."),
    field("Runtime", { tag: "select", name: "runtime", options: RUNTIMES }, "Leave on detect unless the detection picks the wrong one."),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Create project"),
      h("a", { href: "/projects", class: "button secondary" }, "Cancel")),
    out.node);
  onSubmit(form, out, async ({ name, runtime }) => {
    const project = await api.post("/v1/projects", { name: name.trim(), ...(runtime ? { runtime } : {}) });
    await navigate(`/projects/${seg(project.id)}/git`);
  });
  return h("section", {}, h("h1", { tabindex: "-1" }, "New project"), form);
}
