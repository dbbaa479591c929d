// The Console section: a terminal in the page, either in a new one-off container (an
// interactive run of the serving release, `sh` unless asked otherwise) or inside a running
// instance (an exec). One session at a time; starting another ends the first.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace } from "../dom.js";
import { splitCommand } from "../argv.js";
import { TerminalSession } from "../terminal.js";
import { runIdOf, whyNotAttached, SIZES } from "./runs.js";

export async function consoleSection({ project, base, signal }) {
  const heading = h("h2", { id: "console-title" }, "Console");
  if (!session.can("deploy")) {
    return h("section", { "aria-labelledby": "console-title" }, heading,
      h("p", { class: "empty" }, "Opening a terminal needs a token with the deploy scope."));
  }
  const { instances } = await api.get(`/v1/projects/${seg(project.id)}/instances`, { signal });
  const slot = h("div", { "data-testid": "terminal-slot" });
  const about = h("p", { class: "subtle", "data-testid": "terminal-about" });
  let current = null;

  const open = (label, path, aboutNodes, explain) => {
    current?.dispose();
    const terminal = new TerminalSession(label);
    current = terminal;
    replace(about, aboutNodes);
    replace(slot, terminal.node);
    terminal.node.scrollIntoView({ block: "nearest" });
    terminal.connect(path, signal, { explain });
    return terminal;
  };

  const runOut = outcome();
  const sizeList = "console-size-options";
  const runForm = h("form", { class: "inline-form", "data-testid": "console-run-form", "aria-label": "Open a console in a new container" },
    field("Command", { name: "command", value: "sh", required: true, autocomplete: "off", spellcheck: "false", class: "mono" }),
    field("Size", { name: "size", list: sizeList, autocomplete: "off", spellcheck: "false", placeholder: "the project's size" }),
    h("datalist", { id: sizeList }, SIZES.map((size) => h("option", { value: size }))),
    h("button", { type: "submit", class: "primary" }, "Open console"),
    runOut.node);
  onSubmit(runForm, runOut, async ({ command, size }) => {
    const body = { command: splitCommand(command), interactive: true };
    if (size.trim()) body.size = size.trim();
    const run = await api.post(`/v1/projects/${seg(project.id)}/runs`, body, { signal });
    const runId = runIdOf(run);
    open(`Terminal of run ${runId}`, `/v1/runs/${seg(runId)}/attach`,
      ["Interactive run ", h("a", { class: "mono", href: `${base}/runs/${seg(runId)}` }, runId), " in a new container."],
      () => whyNotAttached(runId, signal));
  });

  const execOut = outcome();
  const running = instances.filter((i) => i.state === "running" || i.state === "healthy");
  const choices = (running.length ? running : instances).map((i) => [i.id, `${i.name ?? i.id} (${i.process}, ${i.state})`]);
  const execForm = h("form", { class: "inline-form", "data-testid": "console-exec-form", "aria-label": "Open a console in a running instance" },
    field("Instance", { tag: "select", name: "instance", options: choices, required: true }),
    field("Command", { name: "command", value: "sh", required: true, autocomplete: "off", spellcheck: "false", class: "mono" }),
    h("button", { type: "submit", class: "primary", disabled: choices.length === 0 }, "Exec in instance"),
    execOut.node);
  onSubmit(execForm, execOut, async ({ instance, command }) => {
    const exec = await api.post(`/v1/projects/${seg(project.id)}/instances/${seg(instance)}/exec`,
      { command: splitCommand(command), tty: true }, { signal });
    const path = exec.attachUrl ?? `/v1/execs/${seg(exec.execId)}/attach`;
    open(`Terminal in instance ${instance}`, path,
      ["Exec ", h("span", { class: "mono" }, exec.execId), " in instance ", h("span", { class: "mono" }, instance), "."],
      () => "an exec is attached once, within 60 s of its creation, by a deploy-scope token of its account; start another");
  });

  return h("section", { "aria-labelledby": "console-title" },
    heading,
    h("p", { class: "hint" }, "A terminal in the browser. Commands are split into words like a shell does; no shell reads them unless you run one (the default is sh)."),
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "console-run-title" },
        h("h3", { id: "console-run-title" }, "In a new container"),
        h("p", { class: "hint" }, "An interactive run of the serving release: the project's environment, database and volumes, never routed. It is listed under ",
          h("a", { href: `${base}/runs` }, "Runs"), "."),
        runForm),
      h("section", { class: "card", "aria-labelledby": "console-exec-title" },
        h("h3", { id: "console-exec-title" }, "Inside a running instance"),
        h("p", { class: "hint" }, "Runs the command in an instance that serves traffic now: what you change there is lost at the next deploy."),
        choices.length ? null : h("p", { class: "empty" }, "No instances are running."),
        execForm)),
    about, slot);
}
