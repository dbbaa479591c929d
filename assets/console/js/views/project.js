// A project's page: its header (name, status, hostname, deploy button) and a navigation
// of sections. Each section is one module with `async render(ctx) => Node`; adding a page
// is one entry in SECTIONS and one module.

import { api, session, seg } from "../api.js";
import { h, replace, errorBox, outcome } from "../dom.js";
import { badge } from "../format.js";
import { overviewSection } from "./overview.js";
import { deploysSection, startDeploy } from "./deploys.js";
import { buildView } from "./build.js";
import { envSection } from "./env.js";
import { domainsSection } from "./domains.js";
import { gitSection } from "./git.js";
import { imageSection } from "./image.js";
import { buildSettingsSection } from "./build-settings.js";
import { logsSection } from "./logs.js";
import { runsSection, runView } from "./runs.js";
import { jobsSection } from "./jobs.js";
import { consoleSection } from "./console.js";
import { metricsSection } from "./metrics.js";
import { dataSection } from "./data.js";
import { servicesSection } from "./services.js";
import { backupsSection } from "./backups.js";
import { previewsSection } from "./previews.js";
import { assetsSection } from "./assets.js";
import { settingsSection } from "./settings.js";

/** The sections in navigation order: `path` under `/projects/:id/`, "" for the overview. */
export const SECTIONS = [
  { path: "", label: "Overview", render: overviewSection },
  { path: "deploys", label: "Deploys", render: deploysSection, item: buildView },
  { path: "runs", label: "Runs", render: runsSection, item: runView },
  { path: "jobs", label: "Jobs", render: jobsSection },
  { path: "console", label: "Console", render: consoleSection },
  { path: "logs", label: "Logs", render: logsSection },
  { path: "metrics", label: "Metrics", render: metricsSection },
  { path: "env", label: "Environment", render: envSection },
  { path: "previews", label: "Previews", render: previewsSection },
  { path: "services", label: "Services", render: servicesSection },
  { path: "data", label: "Data", render: dataSection },
  { path: "backups", label: "Backups", render: backupsSection },
  { path: "assets", label: "Assets", render: assetsSection },
  { path: "domains", label: "Domains", render: domainsSection },
  { path: "git", label: "Git", render: gitSection },
  { path: "image", label: "Image", render: imageSection },
  { path: "build", label: "Build", render: buildSettingsSection },
  { path: "settings", label: "Settings", render: settingsSection },
];

export async function projectView(ctx) {
  const { params, signal } = ctx;
  const section = SECTIONS.find((s) => s.path === (params.section ?? ""));
  if (!section || (params.item && !section.item)) {
    return h("section", {}, h("h1", { tabindex: "-1" }, "Page not found"),
      h("p", {}, "This project has no such page. ", h("a", { href: `/projects/${seg(params.id)}` }, "Back to the project")));
  }
  const project = await api.get(`/v1/projects/${seg(params.id)}`, { signal });
  const base = `/projects/${seg(project.id)}`;
  const status = h("span", { "data-testid": "project-status" });
  const facts = h("p", { class: "subtle" });
  const drawHeader = () => {
    replace(status, badge(project.status));
    replace(facts,
      h("a", { href: `http://${project.hostname}`, rel: "noopener noreferrer", target: "_blank", class: "mono" }, project.hostname),
      " · ", project.instances === 0 ? "stopped" : `${project.instances} × ${project.size}`);
  };
  drawHeader();
  // Sections that change the project (deploy, scale) call this to redraw the header.
  const refreshHeader = async () => {
    const fresh = await api.get(`/v1/projects/${seg(project.id)}`, { signal });
    Object.assign(project, fresh);
    drawHeader();
  };
  const sectionCtx = { ...ctx, project, base, refreshHeader };
  const body = await (params.item ? section.item({ ...sectionCtx, itemId: params.item }) : section.render(sectionCtx));

  const deployOut = outcome();
  const deployButton = session.can("deploy") && h("button", {
    type: "button", class: "primary", "data-testid": "deploy",
    onclick: async () => {
      deployButton.disabled = true;
      deployOut.clear();
      try {
        await startDeploy(project, ctx.navigate);
      } catch (error) {
        deployOut.error(error);
      } finally {
        deployButton.disabled = false;
      }
    },
  }, "Deploy now");

  const here = params.section ?? "";
  return h("article", { class: "project" },
    h("div", { class: "page-head" },
      h("div", {},
        h("p", { class: "crumbs" }, h("a", { href: "/projects" }, "Projects"), " / "),
        h("h1", { tabindex: "-1", "data-title": project.name }, project.name, " ", status)),
      deployButton),
    facts,
    deployOut.node,
    h("nav", { class: "tabs", "aria-label": "Project sections" },
      h("ul", {}, SECTIONS.map((s) => h("li", {},
        h("a", { href: s.path ? `${base}/${s.path}` : base, "aria-current": s.path === here ? "page" : undefined }, s.label))))),
    h("div", { class: "section-body" }, body ?? errorBox({ message: "nothing to show" })));
}
