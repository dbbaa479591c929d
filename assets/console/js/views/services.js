// A project's services: the containers beside its app (add-ons such as Redis or
// PostgreSQL, images, a compose file's services), each with its state, where it came
// from, its image or engine, its instances and the connection variables it wires into
// the app (names only: values never reach the console). Deploy tokens add an add-on or
// an image service, change a count and remove one; removing a service whose volume holds
// data needs a second, explicit "and its data" confirmation.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton, errorBox, notice } from "../dom.js";
import { badge, table } from "../format.js";
import { splitCommand, joinCommand } from "../argv.js";
import { parseEnvLines } from "./previews.js";

/** The add-on engines, in the order offered; the API names any other it refuses. */
const ENGINES = [
  ["redis", "Redis (REDIS_URL)"],
  ["postgres", "PostgreSQL (DATABASE_URL, PG*)"],
  ["mariadb", "MariaDB / MySQL (DATABASE_URL, MYSQL_*)"],
  ["memcached", "Memcached (MEMCACHED_URL)"],
];

const HEALTH = [["none", "none: running is ready"], ["tcp", "tcp: the port accepts a connection"]];

/** A service's count is 0..=10 (the API's bound). */
const MAX_COUNT = 10;

/** What a service runs, as a person reads it: "redis 7" for an add-on, else the image. */
function runsFrom(service) {
  const addon = service.addon;
  if (addon) {
    const engine = typeof addon === "string" ? addon : addon.engine;
    const version = typeof addon === "string" ? null : addon.version;
    return h("span", { "data-testid": "service-engine" }, h("strong", {}, engine), version ? ` ${version}` : null);
  }
  return h("span", { class: "mono", "data-testid": "service-image" }, service.image ?? "—");
}

/** The instances, as "1 of 2" with each instance's state and health. */
function instancesOf(service) {
  const instances = service.instances ?? [];
  return h("span", { "data-testid": "service-instances", "data-count": String(instances.length) },
    `${instances.length} of ${service.count}`,
    instances.map((instance) => [" ", badge(instance.health ?? instance.state, {
      title: `${instance.id.slice(0, 12)} · ${instance.state}${instance.startedAt ? ` · started ${new Date(instance.startedAt).toLocaleString()}` : ""}`,
      "data-instance-state": instance.state,
    })]));
}

/** The names of the variables the service wires into the app's containers. */
function wiredKeys(service) {
  const keys = service.connection?.envKeys ?? [];
  if (keys.length === 0) return h("span", { class: "subtle" }, "—");
  return h("span", { "data-testid": "service-connection" },
    keys.map((key, i) => [i ? " " : null, h("code", { "data-key": key }, key)]));
}

export async function servicesSection({ project, base, signal }) {
  const canEdit = session.can("deploy");
  const path = `/v1/projects/${seg(project.id)}/services`;
  const servicePath = (name) => `${path}/${seg(name)}`;
  const list = h("div", { "data-testid": "service-list" });
  const out = outcome();

  const act = async (action) => {
    out.clear();
    try { await action(); } catch (error) { if (error?.name !== "AbortError") out.error(error); }
  };

  const setCount = (service, form) => act(async () => {
    const count = Number(form.elements.count.value);
    await api.patch(servicePath(service.name), { count }, { signal });
    out.ok(count === 0 ? `${service.name} is stopping (count 0).` : `${service.name} runs ${count} instance${count === 1 ? "" : "s"}.`);
    await load({ force: true });
  });

  // A service whose volume holds data is refused (409) unless its data goes too: the
  // API's reason is shown with a second button that says so, never a silent retry.
  const remove = (service) => act(async () => {
    try {
      await api.delete(servicePath(service.name), { signal });
      out.ok(`${service.name} removed.`);
    } catch (error) {
      if (error?.status !== 409) throw error;
      out.show(h("div", { class: "notice pending", role: "alert", "data-testid": "service-delete-data" },
        h("p", {}, error.message),
        h("p", {}, service.addon
          ? "Deleting its data takes a final backup first, kept in the Backups list."
          : "Deleting its data removes its volumes and their files for good."),
        h("div", { class: "actions" }, confirmButton(`Delete ${service.name} and its data`,
          `Yes: delete ${service.name} and its volumes`, () => act(async () => {
            await api.delete(`${servicePath(service.name)}?deleteData=true`, { signal });
            out.ok(`${service.name} and its data were deleted.`);
            await load({ force: true });
          }), { class: "danger" }))));
      return;
    }
    await load({ force: true });
  });

  const countForm = (service) => {
    const form = h("form", { class: "confirm", "data-testid": "service-count-form",
      onsubmit: (event) => { event.preventDefault(); setCount(service, form); } },
      h("label", { class: "visually-hidden", for: `count-${service.name}` }, `Instances of ${service.name}`),
      h("input", { id: `count-${service.name}`, name: "count", type: "number", min: 0, max: MAX_COUNT, step: 1,
        value: String(service.count), required: true, inputmode: "numeric", class: "count" }),
      h("button", { type: "submit", class: "secondary" }, "Set count", h("span", { class: "visually-hidden" }, ` of ${service.name}`)));
    return form;
  };

  const row = (service) => h("tr", { "data-service": service.name, "data-state": service.state, "data-source": service.source },
    h("th", { scope: "row", class: "mono" }, service.name,
      service.port ? h("div", { class: "subtle" }, `port ${service.port}`) : null),
    h("td", {}, h("span", { class: "tag", title: SOURCE_HINT[service.source] ?? "" }, service.source)),
    h("td", {}, runsFrom(service),
      service.command?.length ? h("div", { class: "mono subtle" }, joinCommand(service.command)) : null),
    h("td", {}, badge(service.state, { "data-testid": "service-state" }),
      service.error ? h("div", { class: "error-text" }, service.error) : null),
    h("td", {}, instancesOf(service)),
    h("td", {}, wiredKeys(service),
      (service.envKeys ?? []).length
        ? h("div", { class: "subtle" }, "own env: ", service.envKeys.map((key, i) => [i ? ", " : null, h("span", { class: "mono" }, key)]))
        : null),
    canEdit ? h("td", {}, h("div", { class: "confirm" },
      countForm(service),
      // Compose's services are the repository's: the next deploy would bring one back.
      service.source === "compose" ? null
        : confirmButton(["Remove", h("span", { class: "visually-hidden" }, ` ${service.name}`)], `Remove ${service.name}`,
          () => remove(service), { class: "secondary" }))) : null);

  const headings = ["Service", "Source", "Image or engine", "State", "Instances", "Wires into the app", ...(canEdit ? ["Actions"] : [])];
  // The list is redrawn only when something in it changed, and never under a count being
  // typed, so a refresh neither throws away input nor moves the controls under a click.
  let drawn = null;
  const load = async ({ force = false } = {}) => {
    const page = await api.get(path, { signal });
    const services = page.services ?? [];
    const fresh = JSON.stringify(services);
    const typing = list.contains(document.activeElement) && document.activeElement.name === "count";
    if (!force && (fresh === drawn || typing)) return;
    drawn = fresh;
    replace(list, table("Services", headings, services.map(row), "No services yet."));
  };
  try {
    await load();
  } catch (error) {
    replace(list, errorBox(error));
  }
  // States move on their own (starting → ready, a crash): refreshed while shown.
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") load().catch(() => {});
  }, 3000);
  signal.addEventListener("abort", () => clearInterval(timer));

  return h("div", { class: "grid" },
    h("section", { class: "card wide", "aria-labelledby": "services-title" },
      h("h2", { id: "services-title" }, "Services"),
      h("p", { class: "hint" }, "Containers beside the app on the project's private network, reached by their name (",
        h("code", {}, "redis"), ", ", h("code", {}, "db"), "). They survive the app's deploys; a change restarts only that service. ",
        "Logs: ", h("a", { href: `${base}/logs` }, "Logs"), "; add-on backups: ", h("a", { href: `${base}/backups` }, "Backups"), "."),
      out.node, list),
    canEdit ? addonCard(path, signal, () => load({ force: true })) : null,
    canEdit ? imageCard(path, signal, () => load({ force: true })) : null);
}

const SOURCE_HINT = {
  api: "added through the API, the CLI or the console",
  addon: "an add-on: engine image, volume, password and connection variables managed by Cantila",
  compose: "declared in the repository's compose file; changed there",
};

function addonCard(path, signal, after) {
  const out = outcome();
  const form = h("form", { class: "inline-form", "data-testid": "addon-form", "aria-label": "Add an add-on" },
    field("Engine", { tag: "select", name: "engine", value: "redis", options: ENGINES }),
    field("Name", { name: "name", autocomplete: "off", spellcheck: "false", maxlength: 40, placeholder: "the engine's name" }),
    h("button", { type: "submit", class: "primary" }, "Add add-on"),
    out.node);
  onSubmit(form, out, async ({ engine, name }) => {
    const body = { name: name.trim() || engine, addon: engine };
    out.show(h("p", { role: "status" }, `Starting ${body.name}: pulling its image if needed, then waiting for it to be ready…`));
    const service = await api.post(path, body, { signal });
    form.reset();
    const keys = service.connection?.envKeys ?? [];
    out.show(notice(keys.length
      ? `${service.name} added; the app's containers get ${keys.join(", ")} from their next start (deploy to restart them).`
      : `${service.name} added.`));
    await after();
  });
  return h("section", { class: "card", "aria-labelledby": "addon-title" },
    h("h2", { id: "addon-title" }, "Add an add-on"),
    h("p", { class: "hint" }, "A datastore with a volume, a generated password kept encrypted, a readiness check and its connection variables wired into the app."),
    form);
}

function imageCard(path, signal, after) {
  const out = outcome();
  const healthHint = "tcp probes the port below; none counts a running container as ready.";
  const form = h("form", { class: "inline-form", "data-testid": "service-form", "aria-label": "Add an image service" },
    field("Name", { name: "name", required: true, autocomplete: "off", spellcheck: "false", maxlength: 40, placeholder: "worker" }),
    field("Image", { name: "image", required: true, autocomplete: "off", spellcheck: "false", class: "mono", placeholder: "ghcr.io/team/worker:1.4" }),
    h("div", { class: "field-row" },
      field("Command", { name: "command", autocomplete: "off", spellcheck: "false", class: "mono", placeholder: "the image's own" })),
    field("Port", { name: "port", type: "number", min: 1, max: 65535, step: 1, inputmode: "numeric", placeholder: "6379" },
      "Inside the container, for the health check and for others to connect."),
    field("Health check", { tag: "select", name: "health", value: "none", options: HEALTH }, healthHint),
    field("Instances", { name: "count", type: "number", min: 0, max: MAX_COUNT, step: 1, inputmode: "numeric", value: "1" }),
    field("Volume", { name: "volume", autocomplete: "off", spellcheck: "false", class: "mono", placeholder: "name:/path" },
      "Optional: a named volume of the project mounted at a path; it keeps the data across restarts."),
    h("div", { class: "field-row" },
      field("Env", { tag: "textarea", name: "env", rows: 3, autocomplete: "off", spellcheck: "false", class: "mono", placeholder: "KEY=value" },
        "One KEY=value per line, for this service only; stored encrypted and never shown back.")),
    h("button", { type: "submit", class: "primary" }, "Add service"),
    out.node);
  onSubmit(form, out, async (values) => {
    const body = { name: values.name.trim(), image: values.image.trim() };
    if (values.command.trim()) body.command = splitCommand(values.command);
    // Numbers go as numbers; anything else goes as typed, for the API to name the field.
    const number = (text) => (/^\d+$/.test(text) ? Number(text) : text);
    if (values.port.trim()) body.port = number(values.port.trim());
    if (values.count.trim()) body.count = number(values.count.trim());
    body.health = values.health === "tcp" && body.port !== undefined ? { type: "tcp", port: body.port } : { type: values.health };
    const env = parseEnvLines(values.env);
    if (Object.keys(env).length) body.env = env;
    if (values.volume.trim()) {
      const text = values.volume.trim();
      const at = text.indexOf(":");
      body.volumes = [at < 0 ? { name: text, path: "" } : { name: text.slice(0, at), path: text.slice(at + 1) }];
    }
    const service = await api.post(path, body, { signal });
    form.reset();
    // `reset` returns fields to their markup defaults; these two have defaults of ours.
    form.elements.count.value = "1";
    form.elements.health.value = "none";
    out.ok(`${service.name} added; it starts now.`);
    await after();
  });
  return h("section", { class: "card", "aria-labelledby": "image-service-title" },
    h("h2", { id: "image-service-title" }, "Add an image service"),
    h("p", { class: "hint" }, "Any image: a worker, a queue, a product. No public route; the app reaches it by its name."),
    form);
}
