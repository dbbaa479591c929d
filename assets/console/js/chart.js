// Line charts drawn as SVG with the DOM (no library, no inline style: colours come from
// classes in style.css). Each chart is an image with a <title> and a <desc> that says what
// it shows in words, axis labels, a legend with the latest values, and the figures as a
// table for anyone who cannot see the lines.

import { h, uid } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 220;
const PAD = { left: 56, right: 12, top: 12, bottom: 28 };

/** An SVG element; children are SVG nodes or strings (text nodes). */
function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** The smallest 1, 2 or 5 × 10ⁿ at or above `value`, so axis labels are round. */
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value * (1 - 1e-9)) return step * power;
  }
  return 10 * power;
}

/** The smallest power of two at or above `value` (at least 1 KiB), for byte axes. */
export function binaryCeiling(value) {
  return 2 ** Math.max(10, Math.ceil(Math.log2(Math.max(1, value))));
}

const clock = (ms, withDate) => {
  const date = new Date(ms);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return withDate ? `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}` : time;
};

/**
 * A line chart.
 * - `title`: what it shows ("CPU"); `unit` for the text summary.
 * - `times`: the start of each point (ms since the epoch).
 * - `series`: `[{ name, values, tone, dashed }]`, one value (or null for a gap) per time.
 * - `format(value)`: a value as text ("12 %", "48 MiB").
 * - `ceiling(max)`: the axis's top for the largest value (round decimal numbers unless
 *   given, `binaryCeiling` for bytes).
 */
export function lineChart({ title, times, series, format, testid, ceiling = niceCeiling }) {
  const titleId = uid("chart");
  const descId = `${titleId}-desc`;
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && Number.isFinite(v));
  const top = ceiling(Math.max(0, ...all));
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const first = times[0] ?? 0;
  const span = Math.max(1, (times[times.length - 1] ?? 0) - first);
  const x = (ms) => PAD.left + ((ms - first) / span) * plotWidth;
  const y = (value) => PAD.top + plotHeight - (value / top) * plotHeight;
  const longWindow = span > 20 * 3600 * 1000;

  const grid = [0, 0.5, 1].map((fraction) => {
    const value = top * fraction;
    return svg("g", { class: "tick" },
      svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: PAD.left - 6, y: y(value), "text-anchor": "end", "dominant-baseline": "middle", class: "axis-label" }, format(value)));
  });
  const xLabels = times.length === 0 ? [] : [
    [first, "start"], [first + span / 2, "middle"], [first + span, "end"],
  ].map(([ms, anchor]) => svg("text", { x: x(ms), y: HEIGHT - 8, "text-anchor": anchor, class: "axis-label" }, clock(ms, longWindow)));

  // A gap (null) breaks the line, so missing samples never look like a slope.
  const lines = series.map((s, index) => {
    const runs = [];
    let run = [];
    s.values.forEach((value, i) => {
      if (value === null || !Number.isFinite(value)) {
        if (run.length) runs.push(run);
        run = [];
      } else {
        run.push(`${x(times[i]).toFixed(1)},${y(value).toFixed(1)}`);
      }
    });
    if (run.length) runs.push(run);
    return svg("g", { class: `series tone-${s.tone ?? index}${s.dashed ? " dashed" : ""}`, "data-series": s.name },
      runs.map((points) => points.length === 1
        ? svg("circle", { cx: points[0].split(",")[0], cy: points[0].split(",")[1], r: 2.5 })
        : svg("polyline", { points: points.join(" "), fill: "none" })));
  });

  const latest = (values) => [...values].reverse().find((v) => v !== null && Number.isFinite(v)) ?? null;
  const peak = (values) => values.reduce((max, v) => (v !== null && Number.isFinite(v) && (max === null || v > max) ? v : max), null);
  const summary = series.map((s) => {
    const now = latest(s.values);
    return now === null ? `${s.name}: no data` : `${s.name}: latest ${format(now)}, peak ${format(peak(s.values))}`;
  }).join("; ");
  const range = times.length ? ` from ${clock(first, longWindow)} to ${clock(first + span, longWindow)}` : "";
  const description = `${title}${range}. ${summary}.`;

  const image = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-labelledby": `${titleId} ${descId}`, class: "chart-svg", "data-testid": testid },
    svg("title", { id: titleId }, title),
    svg("desc", { id: descId }, description),
    grid, xLabels,
    svg("line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: PAD.top + plotHeight, class: "axis" }),
    svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: PAD.top + plotHeight, y2: PAD.top + plotHeight, class: "axis" }),
    lines);

  const legend = h("ul", { class: "legend" }, series.map((s, index) => {
    const now = latest(s.values);
    return h("li", { class: `tone-${s.tone ?? index}${s.dashed ? " dashed" : ""}` },
      h("span", { class: "swatch", "aria-hidden": "true" }), `${s.name} `, h("strong", {}, now === null ? "—" : format(now)));
  }));

  const rows = times.map((ms, i) => h("tr", {},
    h("th", { scope: "row" }, clock(ms, longWindow)),
    series.map((s) => h("td", {}, s.values[i] === null || !Number.isFinite(s.values[i]) ? "—" : format(s.values[i])))));
  const data = h("details", { class: "chart-data" },
    h("summary", {}, `${title}: the figures`),
    h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": `${title} figures` },
      h("table", {},
        h("caption", { class: "visually-hidden" }, title),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Time"), series.map((s) => h("th", { scope: "col" }, s.name)))),
        h("tbody", {}, rows))));

  return h("figure", { class: "chart card" },
    h("figcaption", {}, h("h3", {}, title), legend),
    image, data);
}
