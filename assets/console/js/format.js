// Small presentation helpers: status badges (word and colour, never colour alone), times.

import { h } from "./dom.js";

/** Statuses of projects, deploys, instances and certificates, grouped by meaning. */
const TONE = {
  running: "good", healthy: "good", issued: "good", acme: "good", manual: "good", "self-signed": "good",
  completed: "good", available: "good", uploaded: "good",
  building: "busy", releasing: "busy", queued: "busy", starting: "busy", pending: "busy", draining: "busy",
  updating: "busy", unreachable: "bad", missing: "bad",
  failed: "bad", exited: "bad", canceled: "muted", superseded: "muted", stopped: "muted",
  created: "muted", none: "muted",
  // Runs and jobs.
  succeeded: "good", timed_out: "bad", interrupted: "bad", enabled: "good", disabled: "muted", skipped: "muted",
  // Services and their instances.
  ready: "good", pulling: "busy", unhealthy: "bad", crashed: "bad", restarting: "bad",
};

/** A badge naming a status; the word carries the meaning, the colour only echoes it. */
export function badge(status, extra = {}) {
  const tone = TONE[status] ?? "muted";
  return h("span", { class: `badge ${tone}`, ...extra }, status ?? "unknown");
}

/** "3 min ago" with the exact time as a tooltip and for assistive technology. */
export function ago(iso) {
  if (!iso) return "—";
  const then = new Date(iso);
  const seconds = Math.round((Date.now() - then.getTime()) / 1000);
  const text = seconds < 45 ? "just now"
    : seconds < 90 ? "1 min ago"
    : seconds < 3600 ? `${Math.round(seconds / 60)} min ago`
    : seconds < 86400 ? `${Math.round(seconds / 3600)} h ago`
    : then.toLocaleDateString();
  return h("time", { datetime: iso, title: then.toLocaleString() }, text);
}

/** The time between two instants, as "1 min 5 s". */
export function duration(fromIso, toIso) {
  if (!fromIso || !toIso) return "—";
  const seconds = Math.max(0, Math.round((new Date(toIso) - new Date(fromIso)) / 1000));
  return seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

/** A duration in milliseconds as "850 ms", "12.3 s" or "2 min 5 s". */
export function millis(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

export const shortSha = (sha) => (sha ? sha.slice(0, 12) : "—");

/** A deploy's ref as a person reads it: the branch or tag, or a short commit. */
export const refLabel = (ref) => (!ref ? null : /^[0-9a-f]{40}$/.test(ref) ? null : `${ref} `);

/** Deploy statuses after which nothing changes. */
export const FINAL_DEPLOY_STATUSES = ["running", "failed", "canceled", "superseded"];

/** A table inside a scrolling wrapper, so wide tables never widen a phone's page. */
export function table(caption, headings, rows, empty = "Nothing yet.") {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h("table", {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headings.map((heading) => h("th", { scope: "col" }, heading)))),
      h("tbody", {}, rows)));
}

/** A byte count as a person reads it: "1.4 MiB". */
export function bytes(value) {
  if (value === null || value === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  let scaled = value;
  while (scaled >= 1024 && unit < units.length - 1) { scaled /= 1024; unit += 1; }
  return `${scaled.toLocaleString([], { maximumFractionDigits: scaled < 10 && unit > 0 ? 1 : 0 })} ${units[unit]}`;
}

/** A future instant as "in 3 d", with the exact time as a tooltip. */
export function until(iso) {
  if (!iso) return "—";
  const then = new Date(iso);
  const seconds = Math.round((then.getTime() - Date.now()) / 1000);
  const text = seconds <= 0 ? "now"
    : seconds < 3600 ? `in ${Math.max(1, Math.round(seconds / 60))} min`
    : seconds < 86400 ? `in ${Math.round(seconds / 3600)} h`
    : `in ${Math.round(seconds / 86400)} d`;
  return h("time", { datetime: iso, title: then.toLocaleString() }, text);
}
