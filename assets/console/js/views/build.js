// The live build view of one deploy: progress by step, the coloured log following the
// stream, and the final status. A deploy started here arrives as an open stream
// (`POST .../deploy/stream`); otherwise, and on every reconnect, the view reads
// `GET /v1/deploys/:id/events` with `Last-Event-ID`, which replays what was missed.

import { api, session, seg, authHeaders, readBody } from "../api.js";
import { h, replace, outcome, confirmButton } from "../dom.js";
import { badge, ago, shortSha, refLabel, FINAL_DEPLOY_STATUSES } from "../format.js";
import { follow } from "../sse.js";
import { LiveLog } from "../log.js";
import { handoff } from "./deploys.js";

const STEPS = [
  ["queued", "Queued"],
  ["fetch", "Fetch"],
  ["plan", "Plan"],
  ["build", "Build"],
  ["release", "Release"],
  ["running", "Running"],
];

/** Which step a log line shows the deploy has reached, if it shows one. */
function stepOfLine(text) {
  if (/^fetching /.test(text)) return "fetch";
  if (/^plan: /.test(text)) return "plan";
  if (/^(building |reusing image|Step \d+\/)/.test(text)) return "build";
  if (/^(rolling back|re-releasing)/.test(text)) return "build";
  return null;
}

/** Progress: each step done, current, failed or waiting, said in words as well as colour. */
class Progress {
  constructor() {
    this.items = new Map(STEPS.map(([key, label]) => [key, h("li", { "data-step": key, "data-state": "waiting" },
      h("span", { class: "step-label" }, label), h("span", { class: "step-state" }, "waiting"))]));
    this.node = h("ol", { class: "progress", "aria-label": "Deploy progress", "data-testid": "progress" }, [...this.items.values()]);
    this.reached = -1;
  }

  reach(step) {
    const index = STEPS.findIndex(([key]) => key === step);
    if (index <= this.reached) return;
    this.reached = index;
    STEPS.forEach(([key], i) => {
      const state = i < index ? "done" : i === index ? (key === "running" ? "done" : "current") : "waiting";
      this.set(key, state);
    });
  }

  fail(step, word = "failed") {
    const index = Math.max(0, STEPS.findIndex(([key]) => key === step));
    STEPS.forEach(([key], i) => {
      if (i < index) this.set(key, "done");
      else if (i === index) this.set(key, word);
      else this.set(key, "skipped");
    });
    this.reached = STEPS.length;
  }

  set(key, state) {
    const item = this.items.get(key);
    item.dataset.state = state;
    item.querySelector(".step-state").textContent = state;
    if (state === "current") item.setAttribute("aria-current", "step");
    else item.removeAttribute("aria-current");
  }

  get currentStep() {
    return STEPS[Math.min(Math.max(this.reached, 0), STEPS.length - 1)][0];
  }
}

export async function buildView({ project, base, itemId, signal, refreshHeader }) {
  const deployId = itemId;
  const deploy = await api.get(`/v1/deploys/${seg(deployId)}`, { signal });
  const progress = new Progress();
  const log = new LiveLog(`Build log of ${deployId}`);
  const statusNode = h("span", { "data-testid": "deploy-status" }, badge(deploy.status));
  const announce = h("p", { class: "visually-hidden", role: "status" });
  const connection = h("p", { class: "connection subtle", "aria-live": "polite", "data-testid": "connection" });
  const details = h("dl", { class: "facts" });
  const actions = h("div", { class: "actions" });
  const out = outcome();

  const drawDetails = (d) => replace(details,
    h("dt", {}, "Trigger"), h("dd", {}, d.rollbackOf ? `rollback of ${d.rollbackOf}` : d.trigger),
    h("dt", {}, "Source"), h("dd", {}, refLabel(d.ref), h("span", { class: "mono" }, shortSha(d.commitSha)), d.commitMessage ? ` ${d.commitMessage.split("\n")[0]}` : ""),
    h("dt", {}, "Image"), h("dd", { class: "mono" }, d.image ?? "—"),
    h("dt", {}, "Started"), h("dd", {}, ago(d.createdAt)),
    d.error ? [h("dt", {}, "Error"), h("dd", { class: "error-text", "data-testid": "deploy-error" }, `${d.failedStep ?? ""}: ${d.error}`)] : null);
  drawDetails(deploy);

  const setStatus = (status, detail) => {
    replace(statusNode, badge(status));
    announce.textContent = `Deploy ${status}${detail ? ` ${detail}` : ""}`;
    if (status === "queued") progress.reach("queued");
    else if (status === "building") progress.reach("fetch");
    else if (status === "releasing") progress.reach("release");
    else if (status === "running") progress.reach("running");
    else if (status === "failed") {
      // The API words a failure "failed at <step>: <why>".
      const step = /^at (\w+)/.exec(detail ?? "")?.[1];
      progress.fail(["fetch", "plan", "build", "release"].includes(step) ? step : progress.currentStep);
    }
    else if (status === "canceled" || status === "superseded") progress.fail(progress.currentStep, status);
    if (FINAL_DEPLOY_STATUSES.includes(status)) replace(actions);
  };

  if (session.can("deploy") && !FINAL_DEPLOY_STATUSES.includes(deploy.status)) {
    replace(actions, confirmButton("Cancel deploy", "Cancel this deploy", async () => {
      try {
        await api.post(`/v1/deploys/${seg(deployId)}/cancel`, undefined, { signal });
      } catch (error) { out.error(error); }
    }, { class: "secondary" }));
  }

  const eventsUrl = `/v1/deploys/${seg(deployId)}/events`;
  let first = handoff.get(deployId) ?? null;
  handoff.delete(deployId);
  const connect = (lastEventId) => {
    if (first) {
      const response = first;
      first = null;
      return Promise.resolve(response);
    }
    const headers = authHeaders({ accept: "text/event-stream" });
    if (lastEventId) headers["last-event-id"] = lastEventId;
    return fetch(eventsUrl, { headers, signal, cache: "no-store", credentials: "omit" });
  };
  const onEvent = (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch { data = { line: event.data }; }
    if (event.type === "status") {
      setStatus(data.status, data.detail);
      log.add(`── ${data.status}${data.detail ? ` ${data.detail}` : ""}`, `status ${data.status}`, data.at);
    } else if (event.type === "log") {
      const step = stepOfLine(data.line ?? "");
      if (step) progress.reach(step);
      log.add(data.line ?? "", undefined, data.at);
    } else if (event.type === "done") {
      setStatus(data.status);
    }
  };
  const onState = (state, delay) => {
    connection.textContent = state === "reconnecting"
      ? `Connection lost; reconnecting in ${Math.round(delay / 1000)} s and resuming after the last line.`
      : state === "open" ? "Live." : "";
    connection.dataset.state = state;
  };

  follow({ connect, onEvent, onState, signal, readError: (response) => readBody(response).then(() => null, (e) => e) })
    .then(async () => {
      connection.textContent = "";
      const final = await api.get(`/v1/deploys/${seg(deployId)}`, { signal });
      drawDetails(final);
      await refreshHeader();
    })
    .catch((error) => {
      if (error?.name !== "AbortError" && !signal.aborted) out.error(error);
    });

  return h("section", { class: "build", "aria-labelledby": "build-title" },
    h("p", { class: "crumbs" }, h("a", { href: `${base}/deploys` }, "Deploy history"), " / "),
    h("h2", { id: "build-title" }, "Deploy ", h("span", { class: "mono" }, deployId), " ", statusNode),
    announce, progress.node, details, actions, out.node, connection, log.node);
}
