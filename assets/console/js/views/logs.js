// Runtime logs: what the project's instances write to stdout and stderr, and the edge's
// access lines, filtered by text, instance, stream and time window, and followed live over
// `GET /v1/projects/:id/logs` as Server-Sent Events (read with `fetch`, reconnecting with
// `Last-Event-ID` so nothing repeats or is lost). Each instance keeps one colour.

import { api, seg, authHeaders, readBody } from "../api.js";
import { h, field, outcome, replace } from "../dom.js";
import { follow } from "../sse.js";
import { LiveLog } from "../log.js";

/** The time windows offered, as the API's `since` takes them. */
const WINDOWS = [
  ["5m", "Last 5 minutes"],
  ["15m", "Last 15 minutes"],
  ["1h", "Last hour"],
  ["6h", "Last 6 hours"],
  ["1d", "Last day"],
  ["7d", "Last 7 days"],
];
const STREAMS = [["", "All streams"], ["stdout", "stdout"], ["stderr", "stderr"], ["edge", "edge (access log)"]];
/** Lines kept in the page; older ones scroll away (the API still has them). */
const MAX_LINES = 5000;
/** Distinct instance colours (classes in style.css); the id is always shown beside it. */
const PALETTE_SIZE = 6;

/** A stable colour index for an instance id, so it keeps its colour across queries. */
export function instanceColour(instance) {
  if (instance === "edge") return "edge";
  let hash = 0;
  for (const char of instance) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return String(hash % PALETTE_SIZE);
}

/** `2026-01-02T15:04:05.123456789Z` → `15:04:05.123` in the reader's time zone. */
function clockTime(at) {
  const date = new Date(at);
  if (Number.isNaN(date.getTime())) return at;
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

export async function logsSection({ project, signal }) {
  const path = `/v1/projects/${seg(project.id)}/logs`;
  const log = new LiveLog(`Runtime log of ${project.name}`, { maxLines: MAX_LINES });
  const connection = h("p", { class: "connection subtle", "aria-live": "polite", "data-testid": "logs-connection" });
  const out = outcome();
  const { instances } = await api.get(`/v1/projects/${seg(project.id)}/instances`, { signal });

  const instanceOptions = [["", "All instances"],
    ...instances.map((i) => [i.id, `${i.id} (${i.process})`]),
    ["edge", "edge (access log)"]];
  const form = h("form", { class: "inline-form filters", "data-testid": "logs-form", role: "search", "aria-label": "Filter the log" },
    field("Search", { name: "q", type: "search", autocomplete: "off", spellcheck: "false", maxlength: 256, placeholder: "text in the line" }),
    field("Instance", { tag: "select", name: "instance", options: instanceOptions, value: "" }),
    field("Stream", { tag: "select", name: "stream", options: STREAMS, value: "" }),
    field("Window", { tag: "select", name: "since", options: WINDOWS, value: "1h" }),
    h("div", { class: "field checkbox" },
      h("input", { type: "checkbox", name: "follow", id: "logs-follow", checked: true }),
      h("label", { for: "logs-follow" }, "Follow live")),
    h("button", { type: "submit", class: "primary" }, "Show"));

  let current = null;
  const run = () => {
    current?.abort();
    const controller = new AbortController();
    current = controller;
    const stop = () => controller.abort();
    signal.addEventListener("abort", stop, { once: true });
    controller.signal.addEventListener("abort", () => signal.removeEventListener("abort", stop), { once: true });
    const { q, instance, stream, since, follow: live } = form.elements;
    const params = new URLSearchParams({ since: since.value });
    if (q.value.trim()) params.set("q", q.value.trim());
    if (instance.value) params.set("instance", instance.value);
    if (stream.value) params.set("stream", stream.value);
    log.clear();
    out.clear();
    log.list.dataset.query = params.toString();
    return (live.checked ? followLog(params, controller.signal) : readLog(params, controller.signal))
      .catch((error) => {
        if (error?.name !== "AbortError" && !controller.signal.aborted) {
          connection.textContent = "";
          out.error(error);
        }
      });
  };

  const show = (line) => {
    const colour = instanceColour(line.instance);
    const prefix = h("span", { class: "log-meta" },
      h("time", { datetime: line.at }, clockTime(line.at)), " ",
      h("span", { class: `inst inst-${colour}`, title: `instance ${line.instance} (${line.process})` }, line.instance), " ",
      line.stream === "stderr" ? [h("span", { class: "stream stream-stderr" }, "stderr"), " "] : null);
    const kind = line.stream === "stderr" ? "stderr" : "plain";
    log.add(line.line, kind, line.at, { prefix, attrs: { "data-instance": line.instance, "data-stream": line.stream, "data-id": line.id } });
  };

  const readLog = async (params, runSignal) => {
    connection.textContent = "Reading…";
    const page = await api.get(`${path}?${params}`, { signal: runSignal });
    page.lines.forEach(show);
    connection.textContent = `${page.lines.length} line${page.lines.length === 1 ? "" : "s"}`
      + (page.truncated ? ", the newest of the window; older ones were left out." : ".");
    connection.dataset.state = "closed";
  };

  const followLog = (params, runSignal) => {
    const url = `${path}?${params}&follow=true`;
    let seen = 0;
    const count = () => `${seen} line${seen === 1 ? "" : "s"}`;
    return follow({
      signal: runSignal,
      isFinal: () => false,
      connect: (lastEventId) => {
        const headers = authHeaders({ accept: "text/event-stream" });
        if (lastEventId) headers["last-event-id"] = lastEventId;
        return fetch(url, { headers, signal: runSignal, cache: "no-store", credentials: "omit" });
      },
      onEvent: (event) => {
        if (event.type !== "log" || runSignal.aborted) return;
        try { show(JSON.parse(event.data)); seen += 1; } catch { /* a line the API could not encode */ }
      },
      onState: (state, delay) => {
        // A run that was replaced must not overwrite the status line of the one after it.
        if (runSignal.aborted) return;
        connection.dataset.state = state;
        connection.textContent = state === "reconnecting"
          ? `Connection lost; reconnecting in ${Math.round(delay / 1000)} s and resuming after the last line.`
          : state === "open" ? `Live: following new lines.` : count();
      },
      readError: (response) => readBody(response).then(() => null, (e) => e),
    });
  };

  form.addEventListener("submit", (event) => { event.preventDefault(); run(); });
  for (const name of ["instance", "stream", "since", "follow"]) form.elements[name].addEventListener("change", () => run());
  run();

  return h("section", { "aria-labelledby": "logs-title" },
    h("h2", { id: "logs-title" }, "Runtime logs"),
    h("p", { class: "hint" }, "What the instances write to stdout and stderr, and the edge's access lines. Build output stays with its deploy."),
    form, out.node, connection, log.node);
}
