// Metrics: the project's CPU, memory, requests per second by status class and latency
// percentiles over a window, as SVG charts with the figures beside them, from
// `GET /v1/projects/:id/metrics?since=&step=`, refreshed while the page is shown.

import { api, seg } from "../api.js";
import { h, field, outcome, replace } from "../dom.js";
import { lineChart, binaryCeiling } from "../chart.js";
import { bytes } from "../format.js";

/** Windows offered, each with a step that gives 60 to 170 points. */
const WINDOWS = [
  ["15m|10s", "Last 15 minutes"],
  ["1h|1m", "Last hour"],
  ["6h|5m", "Last 6 hours"],
  ["1d|15m", "Last day"],
  ["7d|1h", "Last 7 days"],
];
/** How often the shown window is read again. */
const REFRESH_MS = 15_000;

/** `10s`, `1m`, `2h`, `1d`, `1w` as seconds (the API's normalised `step`). */
export function stepSeconds(step) {
  const match = /^(\d+)([smhdw])$/.exec(step ?? "");
  if (!match) return 60;
  return Number(match[1]) * { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[match[2]];
}

const number = (value, digits = 1) => value.toLocaleString([], { maximumFractionDigits: digits });
export const percent = (value) => `${number(value)} %`;
export const perSecond = (value) => `${number(value, 2)}/s`;
export const millis = (value) => (value >= 1000 ? `${number(value / 1000, 2)} s` : `${number(value)} ms`);

/**
 * Memory against its limit. An app using a sliver of its limit would draw a flat line
 * under a far-away limit, so the limit is drawn only once the use comes within a quarter
 * of it; otherwise the legend names it.
 */
function memoryChart(times, used, limits) {
  const finite = (values) => values.filter((v) => v !== null && Number.isFinite(v));
  const peak = Math.max(0, ...finite(used));
  const limit = Math.max(0, ...finite(limits));
  const drawLimit = limit > 0 && peak >= limit / 4;
  return lineChart({ title: "Memory", testid: "chart-memory", times, format: bytes, ceiling: binaryCeiling,
    series: [{ name: drawLimit || limit === 0 ? "Working set" : `Working set (limit ${bytes(limit)})`, values: used },
      drawLimit ? { name: "Limit", values: limits, tone: "limit", dashed: true } : null].filter(Boolean) });
}

export async function metricsSection({ project, signal }) {
  const path = `/v1/projects/${seg(project.id)}/metrics`;
  const summary = h("div", { "data-testid": "metrics-summary" });
  const charts = h("div", { class: "charts", "data-testid": "metrics-charts" });
  const updated = h("p", { class: "subtle", "aria-live": "off", "data-testid": "metrics-updated" });
  const out = outcome();
  const form = h("form", { class: "inline-form filters one-field", "data-testid": "metrics-form", "aria-label": "Metrics window" },
    field("Window", { tag: "select", name: "window", options: WINDOWS, value: "1h|1m" }));

  let loading = null;
  const load = async () => {
    loading?.abort();
    const controller = new AbortController();
    loading = controller;
    const stop = () => controller.abort();
    signal.addEventListener("abort", stop, { once: true });
    const [since, step] = form.elements.window.value.split("|");
    try {
      const report = await api.get(`${path}?since=${seg(since)}&step=${seg(step)}`, { signal: controller.signal });
      out.clear();
      draw(report);
    } catch (error) {
      if (error?.name !== "AbortError" && !controller.signal.aborted) out.error(error);
    } finally {
      signal.removeEventListener("abort", stop);
    }
  };

  const draw = (report) => {
    const s = report.summary;
    const fact = (label, value, testid) => h("div", { class: "stat" }, h("dt", {}, label), h("dd", { "data-testid": testid }, value));
    replace(summary, h("dl", { class: "stats" },
      fact("CPU now", s.cpuPercent === null ? "—" : percent(s.cpuPercent), "stat-cpu"),
      fact("Memory now", s.memoryBytes === null ? "—"
        : `${bytes(s.memoryBytes)}${s.memoryLimitBytes ? ` of ${bytes(s.memoryLimitBytes)}` : ""}`, "stat-memory"),
      fact("Requests/s (last minute)", perSecond(s.requestsPerSecond), "stat-rps"),
      fact(`Requests (${report.since})`, number(s.requests, 0), "stat-requests"),
      fact("Errors (5xx)", number(s.status5xx, 0), "stat-5xx"),
      fact("Latency p50 / p95 / p99", s.p50Ms === null ? "—" : `${millis(s.p50Ms)} / ${millis(s.p95Ms)} / ${millis(s.p99Ms)}`, "stat-latency"),
      fact("Restarts", number(s.restarts, 0), "stat-restarts")));

    const times = report.series.map((p) => Date.parse(p.at));
    const seconds = stepSeconds(report.step);
    const pick = (key) => report.series.map((p) => p[key]);
    const rate = (key) => report.series.map((p) => p[key] / seconds);
    replace(charts,
      lineChart({ title: "CPU", testid: "chart-cpu", times, format: percent,
        series: [{ name: "CPU (% of one core)", values: pick("cpuPercent") }] }),
      memoryChart(times, pick("memoryBytes"), pick("memoryLimitBytes")),
      lineChart({ title: "Requests per second", testid: "chart-requests", times, format: perSecond,
        series: [{ name: "All", values: pick("requestsPerSecond"), tone: "total" },
          { name: "2xx", values: rate("status2xx"), tone: "ok" },
          { name: "3xx", values: rate("status3xx"), tone: "redirect" },
          { name: "4xx", values: rate("status4xx"), tone: "client" },
          { name: "5xx", values: rate("status5xx"), tone: "server" }] }),
      lineChart({ title: "Latency", testid: "chart-latency", times, format: millis,
        series: [{ name: "p50", values: pick("p50Ms"), tone: 0 },
          { name: "p95", values: pick("p95Ms"), tone: 1 },
          { name: "p99", values: pick("p99Ms"), tone: 2 }] }));
    updated.textContent = `${report.series.length} points of ${report.step} from ${new Date(report.from).toLocaleString()}; updated ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s.`;
  };

  form.elements.window.addEventListener("change", () => load());
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  await load();
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") load();
  }, REFRESH_MS);
  signal.addEventListener("abort", () => { clearInterval(timer); loading?.abort(); });

  return h("section", { "aria-labelledby": "metrics-title" },
    h("h2", { id: "metrics-title" }, "Metrics"),
    h("p", { class: "hint" }, "CPU and memory summed over the instances; requests and latency as the edge saw them."),
    form, out.node, summary, updated, charts);
}
