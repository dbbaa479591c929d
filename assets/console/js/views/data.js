// A project's data: the database wired to it (connection details; the credentials, with
// the password, only on request and only for deploy tokens) and its persistent volumes.

import { api, request, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton, errorBox, notice } from "../dom.js";
import { badge, ago, bytes, table } from "../format.js";

export async function dataSection({ project, signal }) {
  const database = h("div", { "data-testid": "database" });
  const volumes = h("div", { "data-testid": "volumes" });
  await Promise.all([
    drawDatabase(database, project, signal),
    drawVolumes(volumes, project, signal),
  ]);
  return h("div", { class: "grid" },
    h("section", { class: "card wide", "aria-labelledby": "database-title" },
      h("h2", { id: "database-title" }, "Database"), database),
    h("section", { class: "card wide", "aria-labelledby": "volumes-title" },
      h("h2", { id: "volumes-title" }, "Volumes"),
      h("p", { class: "hint" }, "Mounted into every container of the project; they outlive redeploys, rollbacks and scaling."),
      volumes));
}

async function drawDatabase(box, project, signal) {
  const path = `/v1/projects/${seg(project.id)}/database`;
  let info = null;
  try {
    info = await api.get(path, { signal });
  } catch (error) {
    if (error.status !== 404) { replace(box, errorBox(error)); return; }
  }
  const redraw = () => drawDatabase(box, project, signal);
  if (!info) {
    replace(box, h("p", { class: "empty" }, "No database is wired to this project."),
      session.can("deploy") ? createDatabaseForm(project, path, signal, redraw) : null);
    return;
  }
  const row = (label, value) => value === null || value === undefined ? null : [h("dt", {}, label), h("dd", { class: "mono" }, value)];
  const out = outcome();
  replace(box,
    h("dl", { class: "facts", "data-testid": "database-facts" },
      row("Engine", info.engine),
      h("dt", {}, "Status"), h("dd", {}, badge(info.status)),
      row("Host", info.host), row("Port", info.port === null ? null : String(info.port)),
      row(info.engine === "sqlite" ? "File" : "Database", info.database), row("User", info.user),
      row("Size", info.sizeBytes === null ? null : bytes(info.sizeBytes)),
      row("Volume", info.volume),
      h("dt", {}, "Created"), h("dd", {}, ago(info.createdAt))),
    h("h3", {}, "Connection"),
    credentialsBox(path, signal),
    session.can("admin") ? h("div", { class: "actions" },
      confirmButton("Delete database", "Delete it for good (a final backup is taken first)", async () => {
        try {
          const deleted = await request("DELETE", path, { body: { confirm: project.name }, signal });
          await redraw();
          box.prepend(notice(deleted.finalBackup
            ? `The database was deleted; its final backup is ${deleted.finalBackup.id}.`
            : "The database was deleted."));
        } catch (error) { out.error(error); }
      }, { class: "secondary" })) : null,
    out.node);
}

/** The connection env, masked until a deploy token asks for it. */
function credentialsBox(path, signal) {
  const box = h("div", { "data-testid": "credentials" });
  const out = outcome();
  const KEYS = ["DATABASE_URL"];
  const masked = () => replace(box,
    table("Connection env", ["Variable", "Value"], KEYS.map((key) => h("tr", {},
      h("th", { scope: "row", class: "mono" }, key),
      h("td", {}, h("span", { class: "masked", "aria-label": "hidden value" }, "••••••••"))))),
    session.can("deploy")
      ? h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", "data-testid": "reveal", onclick: reveal }, "Reveal credentials"))
      : h("p", { class: "hint" }, "The credentials, password included, are shown to deploy tokens only."),
    out.node);
  const reveal = async () => {
    try {
      const { env } = await api.get(`${path}/credentials`, { signal });
      replace(box,
        table("Connection env", ["Variable", "Value"], Object.entries(env).map(([key, value]) => h("tr", { "data-key": key },
          h("th", { scope: "row", class: "mono" }, key),
          h("td", {}, h("input", { class: "mono", readonly: true, value, "aria-label": key, spellcheck: "false" }))))),
        h("p", { class: "hint" }, "The project's containers get these variables."),
        h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: masked }, "Hide credentials")),
        out.node);
      box.querySelector("input")?.focus();
    } catch (error) { out.error(error); }
  };
  masked();
  return box;
}

function createDatabaseForm(project, path, signal, after) {
  const out = outcome();
  const form = h("form", { class: "inline-form", "data-testid": "database-form" },
    field("Engine", { tag: "select", name: "engine", value: "postgres", options: [
      ["postgres", "PostgreSQL (on the operator's server)"],
      ["sqlite", "SQLite (a file on a volume at /data)"],
    ] }),
    h("button", { type: "submit", class: "primary" }, "Add database"),
    out.node);
  onSubmit(form, out, async ({ engine }) => {
    await api.post(path, { engine }, { signal });
    await after();
  });
  return form;
}

async function drawVolumes(box, project, signal) {
  const path = `/v1/projects/${seg(project.id)}/volumes`;
  const out = outcome();
  const list = h("div", { "data-testid": "volume-list" });
  const load = async () => {
    const found = await api.get(path, { signal });
    replace(list, table("Volumes", ["Name", "Mounted at", "Docker volume", "Created", ...(session.can("admin") ? ["Actions"] : [])],
      found.volumes.map((volume) => h("tr", { "data-volume": volume.name },
        h("th", { scope: "row", class: "mono" }, volume.name),
        h("td", { class: "mono" }, volume.mountPath),
        h("td", { class: "mono" }, volume.dockerVolume),
        h("td", {}, ago(volume.createdAt)),
        session.can("admin") ? h("td", {}, confirmButton(["Delete", h("span", { class: "visually-hidden" }, ` ${volume.name}`)],
          `Delete ${volume.name} and its files`, async () => {
            try {
              await request("DELETE", `${path}/${seg(volume.name)}`, { body: { confirm: project.name }, signal });
              out.ok(`${volume.name} deleted.`);
              await load();
            } catch (error) { out.error(error); }
          }, { class: "secondary" })) : null)),
      "No volumes."));
  };
  try {
    await load();
  } catch (error) {
    replace(box, errorBox(error));
    return;
  }
  let form = null;
  if (session.can("deploy")) {
    form = h("form", { class: "inline-form", "data-testid": "volume-form" },
      field("Name", { name: "name", required: true, autocomplete: "off", spellcheck: "false", maxlength: 32, placeholder: "uploads" }),
      field("Mount path", { name: "mountPath", required: true, autocomplete: "off", spellcheck: "false", placeholder: "/app/uploads" }),
      h("button", { type: "submit", class: "primary" }, "Add volume"));
    onSubmit(form, out, async ({ name, mountPath }) => {
      const volume = await api.post(path, { name: name.trim(), mountPath: mountPath.trim() }, { signal });
      form.reset();
      out.ok(`${volume.name} is mounted at ${volume.mountPath} in containers started from now on.`);
      await load();
    });
  }
  replace(box, list, out.node, form);
}
