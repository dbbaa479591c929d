// The env editor: every variable with its value (secret ones masked by the API), the
// ones whose change waits for the next deploy marked pending, and a form to set, change
// or remove them.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton } from "../dom.js";
import { ago, table } from "../format.js";
import { startDeploy } from "./deploys.js";

export async function envSection({ project, signal, navigate }) {
  const canEdit = session.can("deploy");
  const list = h("div", { "data-testid": "env-list" });
  const banner = h("div");
  const out = outcome();
  const path = `/v1/projects/${seg(project.id)}/env`;

  const draw = (env) => {
    const removed = env.pending.filter((key) => !(key in env.vars));
    const rows = env.details.map((detail) => h("tr", { "data-key": detail.key, "data-pending": String(detail.pending) },
      h("th", { scope: "row", class: "mono" }, detail.key),
      h("td", { class: "mono value" }, detail.masked
        ? h("span", { class: "masked", "aria-label": "hidden value" }, "••••••••")
        : env.vars[detail.key]),
      h("td", {}, detail.secret ? h("span", { class: "tag" }, "secret") : null,
        detail.pending ? h("span", { class: "tag pending", title: "applies on the next deploy" }, "pending") : null),
      h("td", {}, ago(detail.updatedAt)),
      canEdit ? h("td", {},
        h("button", { type: "button", class: "secondary", onclick: () => edit(detail, env.vars[detail.key]) }, "Edit", h("span", { class: "visually-hidden" }, ` ${detail.key}`)),
        " ",
        confirmButton(["Remove", h("span", { class: "visually-hidden" }, ` ${detail.key}`)], `Remove ${detail.key}`, () => change({ [detail.key]: null }), { class: "secondary" }))
        : null));
    const removedRows = removed.map((key) => h("tr", { "data-key": key, "data-pending": "true", class: "removed" },
      h("th", { scope: "row", class: "mono" }, h("del", {}, key)),
      h("td", { class: "subtle" }, "removed"),
      h("td", {}, h("span", { class: "tag pending", title: "applies on the next deploy" }, "pending removal")),
      h("td", {}, "—"),
      canEdit ? h("td", {}) : null));
    replace(list, table("Environment variables", ["Key", "Value", "State", "Updated", ...(canEdit ? ["Actions"] : [])],
      [...rows, ...removedRows], "No variables set."));
    replace(banner, env.pending.length === 0 ? null
      : h("div", { class: "notice pending", role: "status", "data-testid": "env-pending" },
        `${env.pending.length} change${env.pending.length === 1 ? "" : "s"} (${env.pending.join(", ")}) apply on the next deploy. `,
        canEdit ? h("button", { type: "button", class: "primary", onclick: () => startDeploy(project, navigate).catch((e) => out.error(e)) }, "Deploy now") : null));
  };

  const change = async (vars) => {
    const env = await api.post(path, { vars }, { signal });
    draw(env);
    return env;
  };

  let form = null;
  const edit = (detail, value) => {
    form.elements.key.value = detail.key;
    form.elements.secret.checked = detail.secret;
    form.elements.value.type = detail.secret ? "password" : "text";
    form.elements.value.value = detail.masked ? "" : value;
    form.elements.value.placeholder = detail.masked ? "a new value (the current one is hidden)" : "";
    form.elements.value.focus();
  };

  draw(await api.get(path, { signal }));

  if (canEdit) {
    form = h("form", { class: "inline-form", "data-testid": "env-form" },
      field("Key", { name: "key", required: true, autocomplete: "off", spellcheck: "false", pattern: "[A-Za-z_][A-Za-z0-9_]*", title: "letters, digits and underscores; not starting with a digit" }),
      field("Value", { name: "value", autocomplete: "off", spellcheck: "false" }),
      h("div", { class: "field checkbox" },
        h("input", { type: "checkbox", name: "secret", id: "env-secret",
          onchange: (event) => { form.elements.value.type = event.target.checked ? "password" : "text"; } }),
        h("label", { for: "env-secret" }, "Secret (never shown again)")),
      h("button", { type: "submit", class: "primary" }, "Save variable"),
      out.node);
    onSubmit(form, out, async ({ key, value, secret }) => {
      const name = key.trim();
      await change({ [name]: secret ? { value, secret: true } : value });
      form.reset();
      form.elements.value.type = "text";
      form.elements.value.placeholder = "";
      out.ok(`${name} saved; it applies on the next deploy.`);
      form.elements.key.focus();
    });
  }

  return h("section", { "aria-labelledby": "env-title" },
    h("h2", { id: "env-title" }, "Environment"),
    h("p", { class: "hint" }, "Changes apply on the next deploy. Secret values are stored encrypted and never shown again",
      session.can("deploy") ? "." : "; a read token sees every value masked."),
    banner, list,
    canEdit ? h("h3", {}, "Set a variable") : null, form);
}
