// Scheduled jobs of a project: each with its schedule, next firing and last run (a link to
// the run's output), run now, enable or disable, and a form to add one. Jobs declared in
// the repository's `cantila.toml` are changed there, so they offer no delete here.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton } from "../dom.js";
import { badge, ago, until, table } from "../format.js";
import { splitCommand, joinCommand } from "../argv.js";
import { runIdOf } from "./runs.js";

const CONCURRENCY = [["forbid", "forbid: skip a firing while one runs"], ["allow", "allow: run side by side"], ["replace", "replace: cancel the running one"]];

export async function jobsSection({ project, base, signal, navigate }) {
  const canDeploy = session.can("deploy");
  const list = h("div", { "data-testid": "job-list" });
  const out = outcome();
  const path = `/v1/projects/${seg(project.id)}/jobs`;
  const jobPath = (job) => `${path}/${seg(job.name)}`;

  const act = async (action) => {
    out.clear();
    try { await action(); } catch (error) { out.error(error); }
  };
  const runNow = (job) => act(async () => {
    const run = await api.post(`${jobPath(job)}/run`, undefined, { signal });
    await navigate(`${base}/runs/${seg(runIdOf(run))}`);
  });
  const setEnabled = (job, enabled) => act(async () => {
    await api.patch(jobPath(job), { enabled }, { signal });
    await load();
  });
  const remove = (job) => act(async () => {
    await api.delete(jobPath(job), { signal });
    await load();
  });

  const lastRun = (run) => run
    ? [h("a", { class: "mono", href: `${base}/runs/${seg(run.id)}` }, run.id), " ", badge(run.status),
      run.exitCode === null || run.exitCode === undefined ? null : h("span", { class: "mono" }, ` exit ${run.exitCode}`),
      " · ", ago(run.createdAt)]
    : h("span", { class: "subtle" }, "never ran");
  const row = (job) => h("tr", { "data-job": job.name, "data-enabled": String(job.enabled) },
    h("th", { scope: "row" }, job.name, job.source === "cantila.toml" ? h("span", { class: "tag", title: "declared in the repository's cantila.toml" }, " cantila.toml") : null),
    h("td", {}, h("span", { class: "mono", "data-testid": "job-schedule" }, job.schedule), job.timeZone ? h("span", { class: "subtle" }, ` (${job.timeZone})`) : h("span", { class: "subtle" }, " (UTC)")),
    h("td", { class: "mono" }, joinCommand(job.command)),
    h("td", {}, badge(job.enabled ? "enabled" : "disabled")),
    h("td", {}, job.enabled ? until(job.nextRunAt) : "—"),
    h("td", { "data-testid": "job-last-run" }, lastRun(job.lastRun)),
    canDeploy ? h("td", {}, h("div", { class: "confirm" },
      h("button", { type: "button", class: "secondary", onclick: () => runNow(job) }, "Run now"),
      h("button", { type: "button", class: "secondary", onclick: () => setEnabled(job, !job.enabled) }, job.enabled ? "Disable" : "Enable"),
      job.source === "cantila.toml" ? null : confirmButton("Delete", `Delete job ${job.name}`, () => remove(job), { class: "secondary" }))) : null);
  const headings = ["Job", "Schedule", "Command", "State", "Next run", "Last run", ...(canDeploy ? ["Actions"] : [])];

  const load = async () => {
    const page = await api.get(path, { signal });
    replace(list, table("Jobs", headings, (page.jobs ?? []).map(row), "No jobs yet."));
  };
  await load();
  // Jobs fire on their own: the next and last runs move while the page is shown.
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") load().catch(() => {});
  }, 10000);
  signal.addEventListener("abort", () => clearInterval(timer));

  return h("section", { "aria-labelledby": "jobs-title" },
    h("h2", { id: "jobs-title" }, "Jobs"),
    h("p", { class: "hint" }, "Each firing is a run of the serving release (see ", h("a", { href: `${base}/runs` }, "Runs"),
      "). Schedules: cron (\"0 3 * * *\"), \"daily at 03:00\" or \"every 15m\"; times are UTC unless a job names a time zone."),
    out.node, list,
    canDeploy ? addForm(path, signal, load) : null);
}

function addForm(path, signal, after) {
  const out = outcome();
  const form = h("form", { class: "inline-form", "data-testid": "job-form", "aria-label": "Add a job" },
    field("Name", { name: "name", required: true, autocomplete: "off", spellcheck: "false", placeholder: "digest" }),
    field("Schedule", { name: "schedule", required: true, autocomplete: "off", spellcheck: "false", class: "mono", placeholder: "0 3 * * *" }),
    field("Time zone", { name: "timeZone", autocomplete: "off", spellcheck: "false", placeholder: "UTC" }),
    h("div", { class: "field-row" },
      field("Command", { name: "command", required: true, autocomplete: "off", spellcheck: "false", class: "mono", placeholder: "python manage.py send_digest" })),
    field("Timeout (seconds)", { name: "timeout", type: "number", min: 1, max: 86400, step: 1, inputmode: "numeric", placeholder: "3600" }),
    field("Overlaps", { tag: "select", name: "concurrency", options: CONCURRENCY, value: "forbid" }),
    h("button", { type: "submit", class: "primary" }, "Add job"),
    out.node);
  onSubmit(form, out, async ({ name, schedule, timeZone, command, timeout, concurrency }) => {
    const body = { name: name.trim(), schedule: schedule.trim(), command: splitCommand(command), concurrency };
    if (timeZone.trim()) body.timeZone = timeZone.trim();
    if (timeout.trim()) body.timeoutSecs = Number(timeout);
    await api.post(path, body, { signal });
    form.reset();
    out.ok(`Job ${body.name} added.`);
    await after();
  });
  return h("div", { class: "card" }, h("h3", {}, "Add a job"), form);
}
