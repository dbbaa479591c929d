// Project settings: rename, the runtime hint, the health check, and deleting the project.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, errorBox } from "../dom.js";
import { RUNTIMES } from "./projects.js";
import { healthCard } from "./health.js";

export async function settingsSection({ project, signal, navigate }) {
  if (!session.can("deploy")) {
    return h("section", {}, h("h2", {}, "Settings"),
      h("dl", { class: "facts" },
        h("dt", {}, "Name"), h("dd", {}, project.name),
        h("dt", {}, "Runtime"), h("dd", {}, project.runtime ?? "detected from the source"),
        h("dt", {}, "Created"), h("dd", {}, new Date(project.createdAt).toLocaleString())),
      healthCard(project, signal));
  }
  const out = outcome();
  const form = h("form", { class: "card narrow", "data-testid": "settings-form" },
    field("Name", { name: "name", required: true, value: project.name, autocomplete: "off", spellcheck: "false", maxlength: 63 },
      "Renaming changes the project's default hostname."),
    field("Runtime", { tag: "select", name: "runtime", options: RUNTIMES, value: project.runtime ?? "" }),
    h("button", { type: "submit", class: "primary" }, "Save settings"),
    out.node);
  onSubmit(form, out, async ({ name, runtime }) => {
    const updated = await api.patch(`/v1/projects/${seg(project.id)}`, { name: name.trim(), runtime: runtime || null }, { signal });
    await navigate(`/projects/${seg(updated.id)}/settings`, { replace: true });
  });

  const deleteOut = outcome();
  const confirmId = "delete-confirm";
  const deleteForm = h("form", { class: "card narrow danger-zone", "data-testid": "delete-form" },
    h("h3", {}, "Delete this project"),
    h("p", {}, "Its instances stop, and its deploys, env, aliases and git connection are removed. This cannot be undone."),
    field(`Type ${project.name} to confirm`, { name: "confirm", id: confirmId, autocomplete: "off", spellcheck: "false", required: true }),
    h("button", { type: "submit", class: "danger" }, "Delete project"),
    deleteOut.node);
  onSubmit(deleteForm, deleteOut, async ({ confirm }) => {
    if (confirm.trim() !== project.name) {
      deleteOut.show(errorBox({ message: `type the project's name, ${project.name}, to confirm` }));
      return;
    }
    await api.delete(`/v1/projects/${seg(project.id)}`, { signal });
    await navigate("/projects");
  });
  return h("section", { "aria-labelledby": "settings-title" },
    h("h2", { id: "settings-title" }, "Settings"), form, healthCard(project, signal), deleteForm);
}
