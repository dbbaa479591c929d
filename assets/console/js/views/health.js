// Health check settings, a card of the Settings section: the check a release must pass
// before it serves (http, tcp or none), its path, passing status range, port, start
// period and timeouts; empty fields take their defaults, and "Reset to defaults" drops
// the project's settings altogether.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace } from "../dom.js";

// Each field with the check types that use it: the API refuses a field the type does not
// use, so the form sends only those (and shows only those).
const FIELDS = [
  ["path", "Path", ["http"], "Probed with GET; default /."],
  ["statusMin", "Lowest passing status", ["http"], "Default 200."],
  ["statusMax", "Highest passing status", ["http"], "Default 499: any answer below 500."],
  ["port", "Port", ["http", "tcp"], "Inside the instance; default the app's port (PORT)."],
  ["startPeriodSecs", "Start period (seconds)", ["http", "tcp", "none"], "Grace after the start: failing probes meanwhile do not count. For none, how long the instance must stay up (default 3)."],
  ["timeoutSecs", "Probe timeout (seconds)", ["http", "tcp"], "Each probe's own timeout; default 2."],
  ["overallTimeoutSecs", "Overall timeout (seconds)", ["http", "tcp"], "How long after the start period an instance may take to pass; default the server's."],
  ["intervalMs", "Interval (milliseconds)", ["http", "tcp"], "Between probes; default 500."],
];

export function healthCard(project, signal) {
  const current = project.healthCheck ?? null;
  if (!session.can("deploy")) {
    return h("section", { class: "card narrow", "aria-labelledby": "health-title" },
      h("h3", { id: "health-title" }, "Health check"), facts(current));
  }
  const out = outcome();
  const shown = h("div", { "data-testid": "health-current" }, facts(current));
  const type = current?.type ?? "http";
  const wrappers = new Map();
  const form = h("form", { class: "card narrow", "data-testid": "health-form" },
    h("h3", { id: "health-title" }, "Health check"),
    shown,
    field("Type", { tag: "select", name: "type", value: type,
      options: [["http", "http: GET a path"], ["tcp", "tcp: the port accepts a connection"], ["none", "none: stays up for the start period"]],
      onchange: (event) => showFor(event.target.value) }),
    FIELDS.map(([name, label, , hint]) => {
      const wrapper = field(label, { name, autocomplete: "off", spellcheck: "false", inputmode: name === "path" ? undefined : "numeric",
        value: current?.[name] ?? "" }, hint);
      wrappers.set(name, wrapper);
      return wrapper;
    }),
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Save health check"),
      h("button", { type: "button", class: "secondary", "data-testid": "health-reset", onclick: async (event) => {
        const button = event.currentTarget;
        button.disabled = true;
        out.clear();
        try {
          await save(null);
          form.reset();
          for (const name of wrappers.keys()) form.elements[name].value = "";
          form.elements.type.value = "http";
          showFor("http");
          out.ok("Back to the defaults: an HTTP check of / that passes below 500.");
        } catch (error) { out.error(error); } finally { button.disabled = false; }
      } }, "Reset to defaults")),
    out.node);
  const showFor = (kind) => {
    for (const [name, , types] of FIELDS) wrappers.get(name).hidden = !types.includes(kind);
  };
  showFor(type);
  const save = async (settings) => {
    const updated = await api.patch(`/v1/projects/${seg(project.id)}`, { healthCheck: settings }, { signal });
    project.healthCheck = updated.healthCheck ?? null;
    replace(shown, facts(project.healthCheck));
  };
  onSubmit(form, out, async (values) => {
    const settings = { type: values.type };
    for (const [name, , types] of FIELDS) {
      const value = values[name].trim();
      if (!types.includes(values.type) || value === "") continue;
      // Numbers go as numbers; anything else goes as typed, for the API to name the field.
      settings[name] = name === "path" || !/^\d+$/.test(value) ? value : Number(value);
    }
    await save(settings);
    out.ok("Health check saved; it applies from the next release.");
  });
  return form;
}

function facts(check) {
  if (!check) return h("p", { class: "hint", "data-testid": "health-facts" }, "Defaults: an HTTP check of / on the app's port that passes below 500.");
  return h("dl", { class: "facts", "data-testid": "health-facts" },
    Object.entries(check).flatMap(([name, value]) => [
      h("dt", {}, name === "type" ? "Type" : FIELDS.find(([key]) => key === name)?.[1] ?? name),
      h("dd", { class: "mono" }, String(value))]));
}
