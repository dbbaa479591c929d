// Build settings: root directory, Dockerfile path, target, build args and watch paths as
// set through the API; the project's build secrets (names only: a value goes in once and
// never comes back); and, on request, where each setting of the next build comes from
// (the API, the repository's cantila.toml or detection), read from the deploy plan.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton } from "../dom.js";
import { ago, table } from "../format.js";
import { parseEnvLines } from "./previews.js";

const SETTINGS = [
  ["rootDir", "Root directory"],
  ["dockerfile", "Dockerfile"],
  ["target", "Target"],
  ["buildArgs", "Build args"],
  ["watchPaths", "Watch paths"],
];

export async function buildSettingsSection({ project, signal }) {
  const canEdit = session.can("deploy");
  return h("section", { "aria-labelledby": "build-title" },
    h("h2", { id: "build-title" }, "Build"),
    h("p", { class: "hint" }, "Settings left empty fall back to the repository's cantila.toml, then to detection. They apply from the next deploy."),
    canEdit ? settingsForm(project, signal) : settingsFacts(project.build),
    await secretsCard(project, signal, canEdit),
    canEdit ? originsCard(project, signal) : null);
}

/** The settings as a read token sees them. */
function settingsFacts(build) {
  const args = Object.entries(build?.buildArgs ?? {});
  return h("dl", { class: "facts card", "data-testid": "build-settings" },
    h("dt", {}, "Root directory"), h("dd", { class: "mono" }, build?.rootDir ?? "— (the repository's root)"),
    h("dt", {}, "Dockerfile"), h("dd", { class: "mono" }, build?.dockerfile ?? "—"),
    h("dt", {}, "Target"), h("dd", { class: "mono" }, build?.target ?? "— (the last stage)"),
    h("dt", {}, "Build args"), h("dd", { class: "mono" }, args.length ? args.map(([k, v]) => h("div", {}, `${k}=${v}`)) : "—"),
    h("dt", {}, "Watch paths"), h("dd", { class: "mono" }, build?.watchPaths?.length ? build.watchPaths.map((p) => h("div", {}, p)) : "— (every push deploys)"));
}

function settingsForm(project, signal) {
  const out = outcome();
  const build = project.build ?? {};
  const form = h("form", { class: "card", "data-testid": "build-form" },
    field("Root directory", { name: "rootDir", autocomplete: "off", spellcheck: "false", maxlength: 255, value: build.rootDir ?? "", placeholder: "apps/web" },
      "The build context, relative to the repository's root; empty = the root."),
    field("Dockerfile", { name: "dockerfile", autocomplete: "off", spellcheck: "false", maxlength: 255, value: build.dockerfile ?? "", placeholder: "docker/Dockerfile" },
      "Relative to the root directory; empty = Dockerfile there, or a generated one."),
    field("Target", { name: "target", autocomplete: "off", spellcheck: "false", maxlength: 128, value: build.target ?? "", placeholder: "prod" },
      "The stage of a multi-stage Dockerfile; empty = the last stage."),
    field("Build args", { tag: "textarea", name: "buildArgs", rows: 4, autocomplete: "off", spellcheck: "false",
      value: Object.entries(build.buildArgs ?? {}).map(([k, v]) => `${k}=${v}`).join("\n") },
      "One KEY=value per line (ARGs of the Dockerfile). Not for secrets: use build secrets below."),
    field("Watch paths", { tag: "textarea", name: "watchPaths", rows: 3, autocomplete: "off", spellcheck: "false",
      value: (build.watchPaths ?? []).join("\n"), placeholder: "apps/web/**" },
      "One glob per line, relative to the repository's root; a push that changes none of them is ignored. Empty = every push deploys."),
    h("button", { type: "submit", class: "primary" }, "Save build settings"),
    out.node);
  onSubmit(form, out, async (values) => {
    const text = (name) => values[name].trim() || null;
    const body = {
      rootDir: text("rootDir"),
      dockerfile: text("dockerfile"),
      target: text("target"),
      buildArgs: parseEnvLines(values.buildArgs, "build args"),
      watchPaths: values.watchPaths.split("\n").map((line) => line.trim()).filter((line) => line !== ""),
    };
    const updated = await api.patch(`/v1/projects/${seg(project.id)}`, { build: body }, { signal });
    project.build = updated.build;
    out.ok("Build settings saved; they apply from the next deploy.");
  });
  return form;
}

async function secretsCard(project, signal, canEdit) {
  const path = `/v1/projects/${seg(project.id)}/build-secrets`;
  const list = h("div", { "data-testid": "build-secret-list" });
  const out = outcome();
  const load = async () => {
    const { secrets } = await api.get(path, { signal });
    replace(list, table("Build secrets", ["Name", "Updated", ...(canEdit ? ["Actions"] : [])],
      secrets.map((secret) => h("tr", { "data-secret": secret.name },
        h("th", { scope: "row", class: "mono" }, secret.name),
        h("td", {}, ago(secret.updatedAt)),
        canEdit ? h("td", {}, confirmButton(["Remove", h("span", { class: "visually-hidden" }, ` ${secret.name}`)], `Remove ${secret.name}`, async () => {
          try {
            await api.delete(`${path}/${seg(secret.name)}`, { signal });
            await load();
          } catch (error) { out.error(error); }
        }, { class: "secondary" })) : null)),
      "No build secrets."));
  };
  await load();
  let form = null;
  if (canEdit) {
    form = h("form", { class: "inline-form", "data-testid": "build-secret-form" },
      field("Name", { name: "name", required: true, autocomplete: "off", spellcheck: "false", maxlength: 128, placeholder: "NPM_TOKEN" }),
      field("Value", { name: "value", type: "password", required: true, autocomplete: "off" }),
      h("button", { type: "submit", class: "primary" }, "Save secret"),
      out.node);
    onSubmit(form, out, async ({ name, value }) => {
      const saved = await api.put(`${path}/${seg(name.trim())}`, { value }, { signal });
      form.reset();
      await load();
      out.ok(`${saved.name} saved; its value is not shown again.`);
    });
  }
  return h("section", { class: "card", "aria-labelledby": "build-secrets-title" },
    h("h3", { id: "build-secrets-title" }, "Build secrets"),
    h("p", { class: "hint" }, "A build reads each as RUN --mount=type=secret,id=NAME; values are stored encrypted and never enter the image, the plan or a log."),
    list, canEdit ? h("h4", {}, "Add or replace a secret") : null, form ?? out.node);
}

/** Where each setting comes from: the deploy plan, computed on request (it fetches the source). */
function originsCard(project, signal) {
  const result = h("div", { "data-testid": "build-origins" });
  const out = outcome();
  const button = h("button", { type: "button", class: "secondary", onclick: async () => {
    button.disabled = true;
    out.show(h("p", { role: "status" }, "Planning the next deploy…"));
    try {
      const plan = await api.post("/v1/deploy/plan", { projectId: project.id }, { signal });
      out.clear();
      if (!plan.build) {
        replace(result, h("p", { class: "empty" }, "Nothing is built: this project's releases are pulled images."));
        return;
      }
      const shown = (key, value) => key === "buildArgs" ? Object.entries(value ?? {}).map(([k, v]) => `${k}=${v}`).join("\n") || "—"
        : key === "watchPaths" ? (value ?? []).join("\n") || "—"
          : value ?? "—";
      replace(result,
        table("Where each build setting comes from", ["Setting", "Value", "From"],
          SETTINGS.map(([key, label]) => h("tr", { "data-setting": key, "data-source": plan.build.sources[key] },
            h("th", { scope: "row" }, label),
            h("td", { class: "mono pre" }, shown(key, plan.build[key])),
            h("td", {}, sourceLabel(plan.build.sources[key], plan.build.configFile))))),
        h("p", { class: "hint" }, plan.build.configFile ? ["Settings file: ", h("span", { class: "mono" }, plan.build.configFile)] : "No cantila.toml in the repository.",
          plan.build.secrets?.length ? ` Build secrets passed: ${plan.build.secrets.join(", ")}.` : ""));
    } catch (error) {
      out.error(error);
    } finally {
      button.disabled = false;
    }
  } }, "Show where each setting comes from");
  return h("section", { class: "card", "aria-labelledby": "build-origins-title" },
    h("h3", { id: "build-origins-title" }, "The next build"),
    h("p", { class: "hint" }, "Plans the next deploy (fetching the source, building nothing) to show each setting that applies and where it came from."),
    button, out.node, result);
}

function sourceLabel(source, configFile) {
  if (source === "api") return "set here (API)";
  if (source === "file") return `the repository's ${configFile ?? "cantila.toml"}`;
  return "detection (not set)";
}
