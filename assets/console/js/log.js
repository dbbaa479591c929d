// The live log of builds and runtime output: lines coloured by what they say (status
// changes, build steps, warnings, errors) and by their own ANSI colour codes, in a box that
// follows new lines until the person scrolls up, then offers a button back to the latest
// line. A runtime log keeps at most `maxLines` lines in the page, dropping the oldest.

import { h, append } from "./dom.js";

const ANSI = /\x1b\[([0-9;]*)m/g;
const ANSI_COLOURS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];

/** Splits a line on ANSI SGR codes into spans with colour classes; other escapes vanish. */
export function ansiSpans(text) {
  const spans = [];
  let classes = [];
  let last = 0;
  const push = (chunk) => {
    if (chunk) spans.push(classes.length ? h("span", { class: classes.join(" ") }, chunk) : chunk);
  };
  for (const match of text.matchAll(ANSI)) {
    push(text.slice(last, match.index));
    last = match.index + match[0].length;
    const codes = match[1] === "" ? [0] : match[1].split(";").map(Number);
    for (const code of codes) {
      if (code === 0) classes = [];
      else if (code === 1) classes.push("ansi-bold");
      else if (code >= 30 && code <= 37) classes = classes.filter((c) => !c.startsWith("ansi-fg")).concat(`ansi-fg-${ANSI_COLOURS[code - 30]}`);
      else if (code >= 90 && code <= 97) classes = classes.filter((c) => !c.startsWith("ansi-fg")).concat(`ansi-fg-${ANSI_COLOURS[code - 90]}`);
      else if (code === 39) classes = classes.filter((c) => !c.startsWith("ansi-fg"));
    }
  }
  push(text.slice(last).replace(/\x1b\[[0-9;?]*[A-Za-z]/g, ""));
  return spans;
}

/** What kind of line this is, for its colour. */
export function lineKind(text) {
  if (/^(deploy failed|error\b|ERROR\b|failed\b)/i.test(text) || /\berror:/i.test(text)) return "error";
  if (/^warning\b/i.test(text)) return "warning";
  // The classic builder's "Step 2/5 : RUN …"; BuildKit's "#7 [2/5] RUN …" (a stage's name
  // may come first: "#7 [build 2/5] RUN …").
  if (/^Step \d+\/\d+/.test(text) || /^#\d+ \[(?:[\w.-]+ )?\d+\/\d+\]/.test(text)) return "step";
  if (/^(fetching|commit|plan:|building|reusing image|traffic switched|running the release command|published)/.test(text)) return "milestone";
  if (/^ ?---> /.test(text) || /^#\d+ (DONE|CACHED)\b/.test(text)) return "dim";
  return "plain";
}

/** A scrolling log that keeps to the bottom while the reader is there. */
export class LiveLog {
  constructor(label, { maxLines = Infinity } = {}) {
    this.maxLines = maxLines;
    this.list = h("ol", { class: "log", tabindex: "0", role: "log", "aria-label": label, "aria-live": "off" });
    this.jump = h("button", { type: "button", class: "jump secondary", hidden: true, onclick: () => this.toBottom() }, "Jump to the latest line ↓");
    this.node = h("div", { class: "log-box" }, this.list, this.jump);
    this.following = true;
    this.pending = [];
    this.scheduled = false;
    this.list.addEventListener("scroll", () => {
      // Scrolling up stops following; scrolling back down to the end starts it again.
      this.following = this.atBottom();
      this.jump.hidden = this.following;
    });
  }

  atBottom() {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 24;
  }

  toBottom() {
    this.following = true;
    this.jump.hidden = true;
    this.list.scrollTop = this.list.scrollHeight;
  }

  /**
   * Queues a line; lines are drawn in batches, one per animation frame. `prefix` (nodes)
   * goes before the text and `attrs` onto the line's element.
   */
  add(text, kind = lineKind(text), at = null, { prefix = null, attrs = {} } = {}) {
    const item = h("li", { ...attrs, class: `line ${kind}`, title: at ?? undefined }, prefix);
    append(item, ansiSpans(text));
    this.pending.push(item);
    if (!this.scheduled) {
      this.scheduled = true;
      const flush = () => this.flush();
      if (document.visibilityState === "visible") requestAnimationFrame(flush);
      else setTimeout(flush, 50);
    }
  }

  flush() {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    this.list.append(...this.pending);
    this.pending = [];
    // Past the cap the oldest lines go; the reader's place is kept when not following.
    const excess = this.list.childElementCount - this.maxLines;
    if (excess > 0) {
      const before = this.list.scrollHeight;
      for (let i = 0; i < excess; i++) this.list.firstElementChild.remove();
      if (!this.following) this.list.scrollTop -= before - this.list.scrollHeight;
    }
    if (this.following) this.list.scrollTop = this.list.scrollHeight;
  }

  /** Empties the log and follows again (a new query). */
  clear() {
    this.pending = [];
    this.list.replaceChildren();
    this.toBottom();
  }

  get lineCount() {
    return this.list.childElementCount + this.pending.length;
  }
}
