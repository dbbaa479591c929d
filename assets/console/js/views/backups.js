// Backups of the project's database and volumes: the list with size and SHA-256, a
// backup started now (followed until it finishes), downloads (fetched with the token and
// checked against their SHA-256), restore behind a second click, and the schedule with
// its retention (edited by deploy tokens; the project's own schedule can be removed so the
// server's default applies again); with [backups.s3], each backup's off-site copy.

import { api, request, session, seg, downloadFile } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton, errorBox } from "../dom.js";
import { badge, ago, duration, bytes, table } from "../format.js";

export async function backupsSection({ project, signal }) {
  const path = `/v1/projects/${seg(project.id)}/backups`;
  const list = h("div", { "data-testid": "backup-list" });
  const schedule = h("div", { "data-testid": "backup-schedule" });
  const out = outcome();
  out.node.dataset.testid = "backups-outcome";
  let backups = [];
  let timer = null;

  // The copy in S3-compatible storage, when the server keeps one ([backups.s3]).
  const remoteCell = (remote) => h("td", { "data-testid": "backup-remote" }, remote ? [
    badge(remote.status),
    remote.key ? h("p", { class: "mono subtle" }, remote.key) : null,
    remote.uploadedAt ? h("p", { class: "subtle" }, "uploaded ", ago(remote.uploadedAt)) : null,
    remote.error ? h("p", { class: "error-text" }, remote.error) : null,
  ] : "—");
  const showsRemote = () => backups.some((b) => b.remote);

  const row = (backup) => h("tr", { "data-backup": backup.id, "data-status": backup.status },
    h("th", { scope: "row", class: "mono" }, backup.id),
    h("td", {}, backup.kind === "database" ? `database (${backup.engine ?? "?"})` : `volume ${backup.subject}`),
    h("td", {}, backup.trigger),
    h("td", {}, badge(backup.status), backup.error ? h("p", { class: "error-text" }, backup.error) : null),
    h("td", {}, bytes(backup.sizeBytes)),
    h("td", { class: "mono", title: backup.sha256 ?? undefined }, backup.sha256 ? `${backup.sha256.slice(0, 12)}…` : "—"),
    h("td", {}, ago(backup.startedAt), backup.restoredAt ? h("p", { class: "subtle" }, "restored ", ago(backup.restoredAt)) : null),
    h("td", {}, duration(backup.startedAt, backup.finishedAt)),
    showsRemote() ? remoteCell(backup.remote) : null,
    session.can("deploy") ? h("td", { class: "row-actions" }, backup.status === "completed" ? [
      h("button", { type: "button", class: "secondary", "data-testid": "download", onclick: (event) => download(backup, event.currentTarget) },
        "Download", h("span", { class: "visually-hidden" }, ` ${backup.id}`)),
      session.can("admin") ? [" ", confirmButton(["Restore", h("span", { class: "visually-hidden" }, ` ${backup.id}`)],
        "Restore: replace the current data", () => restore(backup), { class: "secondary", "data-testid": "restore" })] : null,
    ] : null) : null);

  const draw = () => replace(list, table("Backups",
    ["Backup", "Of", "Trigger", "Status", "Size", "SHA-256", "Started", "Took",
      ...(showsRemote() ? ["Off-site copy"] : []), ...(session.can("deploy") ? ["Actions"] : [])],
    backups.map(row), "No backups yet."));

  const load = async () => {
    const page = await api.get(`${path}?limit=100`, { signal });
    backups = page.backups;
    draw();
    // While a backup runs, the list follows it.
    clearTimeout(timer);
    if (backups.some((b) => b.status === "running" || b.remote?.status === "pending") && !signal.aborted) {
      timer = setTimeout(() => load().catch((error) => out.error(error)), 1000);
    }
  };

  const download = async (backup, button) => {
    button.disabled = true;
    out.show(h("p", { role: "status" }, `Downloading ${backup.id}…`));
    try {
      const file = await downloadFile(`/v1/backups/${seg(backup.id)}/download`, { signal, fallbackName: `${backup.id}.bin` });
      out.ok(`Downloaded ${file.name} (${bytes(file.size)})${file.verified === true ? "; its SHA-256 matches" : file.verified === false ? "; its SHA-256 does NOT match, download it again" : ""}.`);
    } catch (error) {
      if (error?.name !== "AbortError") out.error(error);
    } finally {
      button.disabled = false;
    }
  };

  const restore = async (backup) => {
    out.show(h("p", { role: "status" }, `Restoring ${backup.id}: a safety backup of the current data comes first…`));
    try {
      const result = await request("POST", `/v1/backups/${seg(backup.id)}/restore`, { body: { confirm: project.name }, signal });
      out.ok(`Restored ${result.restored.id}. The data as it was just before is kept as ${result.safetyBackup.id}.`);
      await load();
    } catch (error) { out.error(error); }
  };

  const start = async () => {
    try {
      const started = await api.post(path, {}, { signal });
      out.ok(`Started ${started.backups.map((b) => b.id).join(", ")}.`);
      await load();
    } catch (error) { out.error(error); }
  };

  const scheduleOut = outcome();
  scheduleOut.node.dataset.testid = "schedule-outcome";
  const scheduleForm = session.can("deploy") ? scheduleEditor() : null;

  const drawSchedule = async () => {
    try {
      const s = await api.get(`${path}/schedule`, { signal });
      replace(schedule, h("dl", { class: "facts" },
        h("dt", {}, "Schedule"), h("dd", { "data-testid": "schedule-spec" }, s.schedule ?? "none",
          s.source === "config" ? h("span", { class: "subtle" }, " (the server's default)") : null),
        h("dt", {}, "Keeps"), h("dd", { "data-testid": "schedule-keeps" }, s.schedule ? `the newest of each of ${s.keepDaily ?? "—"} days and ${s.keepWeekly ?? "—"} weeks` : "—"),
        h("dt", {}, "Last run"), h("dd", {}, s.lastRunAt ? [ago(s.lastRunAt), " ", badge(s.lastStatus)] : "never",
          s.lastError ? h("p", { class: "error-text" }, s.lastError) : null)));
      scheduleForm?.show(s);
    } catch (error) {
      replace(schedule, errorBox(error));
    }
  };

  // The schedule's form: the spec and both retention counts, filled with what applies now.
  // Empty counts take the server's defaults; the API checks everything and its message is
  // shown as it is.
  function scheduleEditor() {
    const spec = field("Schedule", { name: "schedule", autocomplete: "off", spellcheck: "false", placeholder: "daily at 03:00", required: true },
      "“daily at HH:MM” (UTC) or five cron fields, such as “30 2 * * 1-5”.");
    const keepDaily = field("Daily backups kept", { name: "keepDaily", type: "number", min: 0, max: 366, step: 1, inputmode: "numeric" },
      "The newest of each of this many days. Empty: the server's default.");
    const keepWeekly = field("Weekly backups kept", { name: "keepWeekly", type: "number", min: 0, max: 520, step: 1, inputmode: "numeric" },
      "The newest of each of this many weeks. Empty: the server's default.");
    const remove = h("div", { class: "actions", hidden: true });
    const form = h("form", { "data-testid": "schedule-form", "aria-labelledby": "schedule-form-title" },
      h("h4", { id: "schedule-form-title" }, "Change the schedule"),
      spec, keepDaily, keepWeekly,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Save schedule")),
      scheduleOut.node, remove);
    const number = (text) => (text.trim() === "" ? undefined : Number(text));
    onSubmit(form, scheduleOut, async (values) => {
      const saved = await api.put(`${path}/schedule`, {
        schedule: values.schedule,
        keepDaily: number(values.keepDaily),
        keepWeekly: number(values.keepWeekly),
      }, { signal });
      await drawSchedule();
      scheduleOut.ok(`Saved: ${saved.schedule}, keeping ${saved.keepDaily} daily and ${saved.keepWeekly} weekly backups.`);
    });
    const control = (wrapper) => wrapper.querySelector("input");
    return {
      form,
      show(s) {
        // Fill the form only while nobody is editing it.
        if (!form.contains(document.activeElement)) {
          control(spec).value = s.schedule ?? "";
          control(keepDaily).value = s.keepDaily ?? "";
          control(keepWeekly).value = s.keepWeekly ?? "";
        }
        remove.hidden = s.source !== "project";
        replace(remove, s.source === "project"
          ? confirmButton("Remove the project schedule", "Remove: back to the server default", async () => {
            try {
              await api.delete(`${path}/schedule`, { signal });
              await drawSchedule();
              scheduleOut.ok("The project's schedule is removed; the server's default applies.");
            } catch (error) { scheduleOut.error(error); }
          }, { class: "secondary", "data-testid": "remove-schedule" })
          : null);
      },
    };
  }

  signal.addEventListener("abort", () => clearTimeout(timer));
  await Promise.all([load(), drawSchedule()]);
  return h("section", { "aria-labelledby": "backups-title" },
    h("h2", { id: "backups-title" }, "Backups"),
    h("p", { class: "hint" }, "Dumps of the database and archives of the volumes, with their size and SHA-256.",
      session.can("admin") ? " Restoring first backs up the current data." : ""),
    session.can("deploy") ? h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", "data-testid": "backup-now", onclick: start }, "Back up now")) : null,
    out.node, list,
    h("h3", {}, "Schedule"), schedule, scheduleForm?.form ?? null);
}
