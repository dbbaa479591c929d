// A terminal in the page for an interactive run or an exec: xterm.js (vendored under
// `vendor/xterm/`, loaded on first use so other pages never pay for it) wired to the API's
// attach WebSocket. The protocol: the server sends binary frames whose first byte is the
// channel (1 stdout, 2 stderr) and text frames with JSON control messages (`exit` last,
// `error`); the console sends binary frames starting with 0 (stdin) and JSON `resize`.
// Browsers cannot set headers on a WebSocket, so the token travels as the subprotocol
// `cantila.token.<token>` beside `cantila.v1`; it never goes into the URL.

import { session } from "./api.js";
import { h } from "./dom.js";

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;

let loading = null;

/** xterm.js and its fit add-on, and their stylesheet; loaded once, retried after a failure. */
function loadXterm() {
  loading ??= Promise.all([
    import("../vendor/xterm/xterm.mjs"),
    import("../vendor/xterm/addon-fit.mjs"),
    stylesheet("/assets/vendor/xterm/xterm.css"),
  ]).then(([{ Terminal }, { FitAddon }]) => ({ Terminal, FitAddon }))
    .catch((error) => {
      loading = null;
      throw new Error(`the terminal could not be loaded (${error.message ?? error})`);
    });
  return loading;
}

function stylesheet(href) {
  if (document.querySelector(`link[rel=stylesheet][href="${href}"]`)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const link = h("link", { rel: "stylesheet", href });
    link.addEventListener("load", resolve, { once: true });
    link.addEventListener("error", () => { link.remove(); reject(new Error(`${href} did not load`)); }, { once: true });
    document.head.append(link);
  });
}

/**
 * Opens `term` in `host` under the console's Content-Security-Policy, which refuses inline
 * styles. xterm.js's DOM renderer writes its theme, cell sizes and scrollbar colours into
 * `<style>` elements it creates while opening; for that one synchronous call, those
 * elements are inert stand-ins whose text goes into constructed style sheets
 * (`adoptedStyleSheets`, which the policy does not govern and which hold only xterm.js's
 * own rules). 24-bit colours, which it would write as a `style` attribute, are set through
 * the CSSOM instead. Both reach into xterm.js internals of the vendored version; the
 * console's browser test fails on any policy refusal, so an upgrade that moves them shows.
 * Returns a function that drops the style sheets.
 */
function openUnderPolicy(term, host) {
  const sheets = new Set();
  const create = Document.prototype.createElement;
  const standIn = () => {
    const element = create.call(document, "template");
    const sheet = new CSSStyleSheet();
    sheets.add(sheet);
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    Object.defineProperty(element, "textContent", {
      get: () => [...sheet.cssRules].map((rule) => rule.cssText).join("\n"),
      set: (css) => sheet.replaceSync(String(css ?? "")),
    });
    element.remove = () => {
      drop(sheets, sheet);
      Element.prototype.remove.call(element);
    };
    return element;
  };
  document.createElement = function createElement(tag, options) {
    return String(tag).toLowerCase() === "style" ? standIn() : create.call(this, tag, options);
  };
  try {
    term.open(host);
  } finally {
    delete document.createElement;
  }
  const rows = term._core?._renderService?._renderer?.value?._rowFactory;
  if (typeof rows?._addStyle === "function") {
    rows._addStyle = (element, declaration) => { element.style.cssText += `${declaration};`; };
  }
  return () => [...sheets].forEach((sheet) => drop(sheets, sheet));
}

function drop(sheets, sheet) {
  sheets.delete(sheet);
  document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
}

/** The WebSocket URL of an API path, on the console's own origin. */
function socketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** The terminal's colours: the console's log colours, so both read alike. */
function theme() {
  const css = getComputedStyle(document.documentElement);
  const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  return {
    background: v("--log-bg", "#0f172a"),
    foreground: v("--log-text", "#e2e8f0"),
    cursor: v("--log-text", "#e2e8f0"),
    selectionBackground: "#334155",
  };
}

/**
 * One terminal session. `node` is its region (status line, terminal, disconnect button);
 * put it in the page, then `connect(path, signal)` with the attach path of a run or an
 * exec. `done` resolves with `{ exitCode, error }` when the session ends.
 */
export class TerminalSession {
  constructor(label) {
    this.label = label;
    this.status = h("p", { class: "terminal-status", role: "status", "data-testid": "terminal-status", "data-state": "connecting" }, "Connecting…");
    // xterm.js goes into `host`, inside a padded frame: the fit add-on sizes the terminal
    // to its parent's content box.
    this.host = h("div", { class: "terminal-screen" });
    this.disconnect = h("button", { type: "button", class: "secondary", "data-testid": "terminal-disconnect", onclick: () => this.close() }, "Disconnect");
    this.node = h("div", { class: "terminal-box" },
      this.status,
      h("p", { class: "hint" }, "Every key goes to the process (Ctrl-C included); the window's size follows this box."),
      h("div", { class: "terminal-host", "data-testid": "terminal", "aria-label": label, role: "group" }, this.host),
      h("div", { class: "actions" }, this.disconnect));
    this.exitCode = null;
    this.error = null;
    this.done = new Promise((resolve) => { this.finish = resolve; });
    // What a session's end undoes (listeners), and what removing the terminal undoes.
    this.listeners = [];
    this.removeTerminal = () => {};
  }

  setStatus(state, text) {
    this.status.dataset.state = state;
    this.status.textContent = text;
  }

  /**
   * `explain`: asked when the API refused the connection, since a browser hides a refused
   * WebSocket upgrade's status and message; resolves to a sentence saying why (or null).
   */
  async connect(path, signal, { explain = null } = {}) {
    let xterm;
    try {
      xterm = await loadXterm();
    } catch (error) {
      this.end({ error: error.message });
      return this.done;
    }
    if (signal?.aborted) { this.end({ error: "closed" }); return this.done; }
    const term = new xterm.Terminal({
      cursorBlink: true,
      scrollback: 5000,
      fontFamily: getComputedStyle(document.documentElement).getPropertyValue("--mono").trim() || "monospace",
      fontSize: 14,
      theme: theme(),
    });
    const fit = new xterm.FitAddon();
    term.loadAddon(fit);
    const dropSheets = openUnderPolicy(term, this.host);
    this.term = term;
    this.removeTerminal = () => { term.dispose(); dropSheets(); };
    fit.fit();

    const token = session.token();
    const socket = new WebSocket(socketUrl(path), ["cantila.v1", `cantila.token.${token}`]);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    const encoder = new TextEncoder();
    const send = (payload) => { if (socket.readyState === WebSocket.OPEN) socket.send(payload); };
    const stdin = (bytes) => {
      const frame = new Uint8Array(bytes.length + 1);
      frame[0] = STDIN;
      frame.set(bytes, 1);
      send(frame);
    };
    // The size is also kept on the terminal's frame, where a test (or a person's tools) reads it.
    const frame = this.host.parentElement;
    const resize = ({ cols, rows }) => {
      frame.dataset.cols = String(cols);
      frame.dataset.rows = String(rows);
      send(JSON.stringify({ type: "resize", cols, rows }));
    };

    const subscriptions = [
      term.onData((data) => stdin(encoder.encode(data))),
      // Mouse reports in X10 mode: bytes, one per character.
      term.onBinary((data) => stdin(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff))),
      term.onResize(resize),
    ];
    const observer = new ResizeObserver(() => { if (this.host.isConnected) fit.fit(); });
    observer.observe(this.host);
    this.listeners.push(() => subscriptions.forEach((s) => s.dispose()), () => observer.disconnect());

    socket.addEventListener("open", () => {
      if (socket.protocol !== "cantila.v1") {
        socket.close(1002, "unexpected subprotocol");
        return;
      }
      this.opened = true;
      this.setStatus("open", "Connected.");
      resize({ cols: term.cols, rows: term.rows });
      term.focus();
    });
    socket.addEventListener("message", (event) => {
      if (event.data instanceof ArrayBuffer) {
        const bytes = new Uint8Array(event.data);
        if (bytes.length === 0) return;
        if (bytes[0] === STDOUT || bytes[0] === STDERR) term.write(bytes.subarray(1));
        return;
      }
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      if (message.type === "exit") this.exitCode = message.exitCode;
      else if (message.type === "error") this.error = message.message ?? "the server reported an error";
    });
    socket.addEventListener("close", (event) => {
      if (this.exitCode !== null) {
        this.end({});
      } else if (this.error) {
        this.end({ error: this.error });
      } else if (this.closedByUs) {
        this.end({ error: "disconnected" });
      } else if (!this.opened && explain) {
        const why = Promise.resolve().then(explain).catch((error) => error?.message ?? null);
        why.then((reason) => this.end({ error: `the API refused the connection: ${reason ?? "no reason given"}` }));
      } else {
        this.end({ error: `the connection closed before the process ended (WebSocket code ${event.code}${event.reason ? `: ${event.reason}` : ""})` });
      }
    });
    // Leaving the page ends the session and takes the terminal's style sheets with it.
    signal?.addEventListener("abort", () => this.dispose(), { once: true });
    return this.done;
  }

  /** Ends the session from this side: the server sees the socket close. */
  close() {
    this.closedByUs = true;
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000, "closed by the console");
    else this.end({ error: "disconnected" });
  }

  end({ error = null }) {
    if (this.ended) return;
    this.ended = true;
    this.disconnect.remove();
    const term = this.disposed ? null : this.term;
    if (term) term.options.disableStdin = true;
    if (this.exitCode !== null) {
      this.status.dataset.exitCode = String(this.exitCode);
      this.setStatus(this.exitCode === 0 ? "exited" : "failed", `The process exited with code ${this.exitCode}.`);
      term?.write(`\r\n\x1b[2m[exited with code ${this.exitCode}]\x1b[0m\r\n`);
    } else {
      this.setStatus("error", error === "disconnected" ? "Disconnected." : `Ended: ${error}`);
    }
    // The terminal stays on screen to be read; only its listeners go.
    this.listeners.forEach((stop) => stop());
    this.listeners = [];
    this.finish({ exitCode: this.exitCode, error: this.exitCode === null ? error : null });
  }

  /** Removes the terminal itself (a new session replaces it). */
  dispose() {
    if (!this.ended) this.close();
    this.disposed = true;
    this.removeTerminal();
    this.removeTerminal = () => {};
    this.node.remove();
  }
}
