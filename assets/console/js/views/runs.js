// One-off runs of a project: the list (command, status, exit code, who, when, how long), a
// form to start one, and a run's page with its output followed live over
// `GET /v1/runs/:id/events` (read with `fetch`, resuming with `Last-Event-ID`) and a cancel
// button. Interactive sessions are opened in the Console section; an interactive run still
// waiting for its terminal can be attached from its page too.

import { api, session, seg, authHeaders, readBody } from "../api.js";
import { h, field, outcome, onSubmit, replace, errorBox, confirmButton } from "../dom.js";
import { badge, ago, millis, table } from "../format.js";
import { follow } from "../sse.js";
import { LiveLog } from "../log.js";
import { splitCommand, joinCommand } from "../argv.js";
import { TerminalSession } from "../terminal.js";

/** Run statuses after which nothing changes. */
export const FINAL_RUN_STATUSES = ["succeeded", "failed", "canceled", "timed_out", "interrupted"];
const isActive = (run) => !FINAL_RUN_STATUSES.includes(run.status);

/** The default size tiers; an operator may configure others, which the API then accepts. */
export const SIZES = ["nano", "small", "medium", "large"];

/** Lines kept in a run's page; older ones scroll away. */
const MAX_LINES = 10000;

/** The id of a run the API just created (`runId`, and `id` as in every Run). */
export const runIdOf = (run) => run.runId ?? run.id;

/** Who started a run: the actor, and the job when a schedule fired it. */
export function startedBy(run) {
  return [run.trigger === "job" ? h("span", { class: "tag", title: run.jobId ?? "" }, "job") : null, run.startedBy ?? "—"];
}

/** Why a run's terminal could not attach, as far as the run itself tells. */
export async function whyNotAttached(runId, signal) {
  const run = await api.get(`/v1/runs/${seg(runId)}`, { signal });
  if (!run.interactive) return `run ${runId} is not interactive; its output is on its page`;
  if (run.status !== "pending") return `run ${runId} is ${run.status}; a terminal attaches only to a pending interactive run, once`;
  return "a terminal needs a deploy-scope token of the run's account";
}

/** A run's status with its error, if it has one. */
function statusCell(run) {
  return [badge(run.status), run.error ? h("span", { class: "error-text" }, ` ${run.error}`) : null];
}

const exitCode = (run) => (run.exitCode === null || run.exitCode === undefined ? "—" : String(run.exitCode));

export async function runsSection({ project, base, signal, navigate }) {
  const canDeploy = session.can("deploy");
  const list = h("div", { "data-testid": "run-history" });
  const more = h("div");
  const out = outcome();
  let rows = [];
  let olderLoaded = false;

  const cancel = async (run) => {
    try {
      await api.post(`/v1/runs/${seg(run.id)}/cancel`, undefined, { signal });
      await reload();
    } catch (error) { out.error(error); }
  };
  const row = (run) => h("tr", { "data-run": run.id, "data-status": run.status },
    h("th", { scope: "row", class: "mono" }, h("a", { href: `${base}/runs/${seg(run.id)}` }, run.id)),
    h("td", { class: "mono", "data-testid": "run-command" }, joinCommand(run.command), run.interactive ? h("span", { class: "tag" }, " interactive") : null),
    h("td", {}, statusCell(run)),
    h("td", { class: "mono", "data-testid": "run-exit-code" }, exitCode(run)),
    h("td", {}, startedBy(run)),
    h("td", {}, ago(run.createdAt)),
    h("td", {}, millis(run.durationMs)),
    canDeploy ? h("td", {}, isActive(run)
      ? confirmButton("Cancel", "Cancel this run", () => cancel(run), { class: "secondary" })
      : null) : null);
  const headings = ["Run", "Command", "Status", "Exit code", "Started by", "Started", "Took", ...(canDeploy ? ["Actions"] : [])];
  const draw = () => replace(list, table("Runs", headings, rows, "No runs yet."));

  const load = async (cursor) => {
    const page = await api.get(`/v1/projects/${seg(project.id)}/runs${cursor ? `?cursor=${seg(cursor)}` : ""}`, { signal });
    const found = (page.runs ?? []).map(row);
    rows = cursor ? [...rows, ...found] : found;
    draw();
    replace(more, page.nextCursor
      ? h("button", { type: "button", class: "secondary", onclick: () => { olderLoaded = true; load(page.nextCursor).catch((e) => replace(more, errorBox(e))); } }, "Show older runs")
      : null);
  };
  const reload = () => load(null);
  await load(null);
  // Statuses move on their own (a run ends, a job fires): refresh while shown, unless the
  // reader paged back into older runs.
  const timer = setInterval(() => {
    if (document.visibilityState === "visible" && !olderLoaded) reload().catch(() => {});
  }, 5000);
  signal.addEventListener("abort", () => clearInterval(timer));

  return h("section", { "aria-labelledby": "runs-title" },
    h("h2", { id: "runs-title" }, "Runs"),
    h("p", { class: "hint" }, "A run is a one-off container of the serving release's image, with the project's environment, database and volumes, never routed. ",
      h("a", { href: `${base}/console` }, "Open a console"), " for an interactive one."),
    canDeploy ? startForm(project, base, signal, navigate) : null,
    out.node, list, more);
}

function startForm(project, base, signal, navigate) {
  const out = outcome();
  const listId = "run-size-options";
  const form = h("form", { class: "inline-form", "data-testid": "run-form", "aria-label": "Start a run" },
    h("div", { class: "field-row" },
      field("Command", { name: "command", required: true, autocomplete: "off", spellcheck: "false", class: "mono", placeholder: "python manage.py migrate" },
        "Split into words like a shell does ('quotes' group words); no shell reads it, so use sh -c '…' for pipes or variables.")),
    field("Size", { name: "size", list: listId, autocomplete: "off", spellcheck: "false", placeholder: "the project's size" }),
    h("datalist", { id: listId }, SIZES.map((size) => h("option", { value: size }))),
    field("Timeout (seconds)", { name: "timeout", type: "number", min: 1, max: 86400, step: 1, inputmode: "numeric", placeholder: "3600" }),
    h("button", { type: "submit", class: "primary" }, "Run"),
    out.node);
  onSubmit(form, out, async ({ command, size, timeout }) => {
    const body = { command: splitCommand(command) };
    if (size.trim()) body.size = size.trim();
    if (timeout.trim()) body.timeoutSecs = Number(timeout);
    const run = await api.post(`/v1/projects/${seg(project.id)}/runs`, body, { signal });
    await navigate(`${base}/runs/${seg(runIdOf(run))}`);
  });
  return h("div", { class: "card" }, h("h3", {}, "Start a run"), form);
}

/** One run: its facts, its output (live while it runs), cancel, and attach when waiting. */
export async function runView({ base, itemId, signal }) {
  const runId = itemId;
  let run = await api.get(`/v1/runs/${seg(runId)}`, { signal });
  const canDeploy = session.can("deploy");
  const statusNode = h("span", { "data-testid": "run-status" });
  const details = h("dl", { class: "facts" });
  const actions = h("div", { class: "actions" });
  const connection = h("p", { class: "connection subtle", "aria-live": "polite", "data-testid": "run-connection" });
  const announce = h("p", { class: "visually-hidden", role: "status" });
  const log = new LiveLog(`Output of ${runId}`, { maxLines: MAX_LINES });
  log.list.dataset.testid = "run-output";
  const terminalSlot = h("div");
  const out = outcome();

  const draw = () => {
    replace(statusNode, badge(run.status));
    replace(details,
      h("dt", {}, "Command"), h("dd", { class: "mono", "data-testid": "run-command" }, joinCommand(run.command)),
      h("dt", {}, "Exit code"), h("dd", { class: "mono", "data-testid": "run-exit-code" }, exitCode(run)),
      run.error ? [h("dt", {}, "Error"), h("dd", { class: "error-text", "data-testid": "run-error" }, run.error)] : null,
      h("dt", {}, "Started by"), h("dd", {}, startedBy(run)),
      h("dt", {}, "Created"), h("dd", {}, ago(run.createdAt)),
      h("dt", {}, "Started"), h("dd", {}, ago(run.startedAt)),
      h("dt", {}, "Finished"), h("dd", {}, ago(run.finishedAt)),
      h("dt", {}, "Took"), h("dd", {}, millis(run.durationMs)),
      h("dt", {}, "Size"), h("dd", {}, run.size ?? "—"),
      h("dt", {}, "Timeout"), h("dd", {}, run.timeoutSecs ? `${run.timeoutSecs} s` : "—"),
      h("dt", {}, "Deploy"), h("dd", { class: "mono" }, run.deployId ? h("a", { href: `${base}/deploys/${seg(run.deployId)}` }, run.deployId) : "—"),
      run.interactive ? [h("dt", {}, "Interactive"), h("dd", {}, "yes (a terminal)")] : null);
    replace(actions,
      canDeploy && run.interactive && run.status === "pending"
        ? h("button", { type: "button", class: "primary", onclick: attach }, "Attach a terminal") : null,
      canDeploy && isActive(run)
        ? confirmButton("Cancel run", "Cancel this run", async () => {
          try {
            await api.post(`/v1/runs/${seg(runId)}/cancel`, undefined, { signal });
          } catch (error) { out.error(error); }
        }, { class: "secondary" }) : null);
  };
  const attach = () => {
    const terminal = new TerminalSession(`Terminal of ${runId}`);
    replace(terminalSlot, terminal.node);
    terminal.connect(`/v1/runs/${seg(runId)}/attach`, signal, { explain: () => whyNotAttached(runId, signal) });
  };
  draw();

  const eventsUrl = `/v1/runs/${seg(runId)}/events`;
  const onEvent = (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch { data = { line: event.data }; }
    if (event.type === "output") {
      const stream = data.stream ?? "stdout";
      log.add(data.line ?? "", stream === "stderr" ? "stderr" : "plain", data.at ?? null, { attrs: { "data-stream": stream } });
    } else if (event.type === "status" && data.status) {
      run = { ...run, ...data };
      announce.textContent = `Run ${run.status}`;
      draw();
    }
  };
  const isFinal = (event) => {
    if (event.type === "done") return true;
    if (event.type !== "status") return false;
    try { return FINAL_RUN_STATUSES.includes(JSON.parse(event.data).status); } catch { return false; }
  };
  const onState = (state, delay) => {
    connection.dataset.state = state;
    connection.textContent = state === "reconnecting"
      ? `Connection lost; reconnecting in ${Math.round(delay / 1000)} s and resuming after the last line.`
      : state === "open" ? (isActive(run) ? "Live." : "") : "";
  };
  follow({
    connect: (lastEventId) => {
      const headers = authHeaders({ accept: "text/event-stream" });
      if (lastEventId) headers["last-event-id"] = lastEventId;
      return fetch(eventsUrl, { headers, signal, cache: "no-store", credentials: "omit" });
    },
    onEvent, onState, isFinal, signal,
    readError: (response) => readBody(response).then(() => null, (e) => e),
  }).then(async () => {
    connection.textContent = "";
    run = await api.get(`/v1/runs/${seg(runId)}`, { signal });
    draw();
  }).catch((error) => {
    if (error?.name !== "AbortError" && !signal.aborted) out.error(error);
  });

  return h("section", { class: "run", "aria-labelledby": "run-title" },
    h("p", { class: "crumbs" }, h("a", { href: `${base}/runs` }, "Runs"), " / "),
    h("h2", { id: "run-title" }, "Run ", h("span", { class: "mono" }, runId), " ", statusNode),
    announce, details, actions, out.node, terminalSlot, connection, log.node);
}
