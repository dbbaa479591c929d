// Client-side routing with the History API: a table of path patterns to views. Every
// view gets an AbortSignal that ends when the person navigates away, which stops its
// requests, timers and streams. After each navigation the page's heading takes focus and
// the title changes, so keyboard and screen-reader users know where they are.

import { h, replace, errorBox } from "./dom.js";

let routes = [];
let current = null;
let main = null;
let guard = () => null;

/**
 * `table`: `[pattern, view]` pairs; a pattern is a path with `:name` segments. A view is
 * `async (ctx) => Node`, where `ctx` has `params`, `signal`, `navigate` and `path`.
 * `beforeEach(path)` may return another path to go to instead (sign-in).
 */
export function start(container, table, beforeEach) {
  main = container;
  routes = table.map(([pattern, view]) => [compile(pattern), view]);
  guard = beforeEach;
  window.addEventListener("popstate", () => show(location.pathname, { focus: true }));
  document.addEventListener("click", interceptLinks);
  return show(location.pathname, { focus: false });
}

/** Goes to `path` (pushing history unless `replace`), then draws it. */
export function navigate(path, { replace: replaceState = false, state = null } = {}) {
  if (replaceState) history.replaceState(state, "", path);
  else history.pushState(state, "", path);
  return show(path, { focus: true });
}

/** Changes the address bar without drawing again (a view that learned its own URL). */
export function rename(path) {
  history.replaceState(history.state, "", path);
}

function compile(pattern) {
  const names = [];
  const source = pattern.replace(/:([a-zA-Z]+)/g, (_, name) => { names.push(name); return "([^/]+)"; });
  return { regex: new RegExp(`^${source}/?$`), names };
}

function match(path) {
  for (const [{ regex, names }, view] of routes) {
    const found = regex.exec(path);
    if (found) {
      const params = Object.fromEntries(names.map((name, i) => [name, decodeURIComponent(found[i + 1])]));
      return { view, params };
    }
  }
  return null;
}

async function show(path, { focus }) {
  const redirect = guard(path);
  if (redirect && redirect !== path) {
    history.replaceState(null, "", redirect);
    path = redirect;
  }
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const found = match(path);
  replace(main, h("p", { class: "loading", role: "status" }, "Loading…"));
  let node;
  try {
    node = found
      ? await found.view({ params: found.params, signal: controller.signal, navigate, path })
      : notFound(path);
  } catch (error) {
    if (controller.signal.aborted) return;
    node = h("section", {}, h("h1", { tabindex: "-1" }, "Something went wrong"), errorBox(error));
  }
  if (controller.signal.aborted) return;
  replace(main, node);
  const heading = main.querySelector("h1");
  document.title = heading ? `${heading.dataset.title ?? heading.textContent} · Cantila` : "Cantila";
  window.dispatchEvent(new CustomEvent("cantila:navigated", { detail: path }));
  if (focus) (heading ?? main).focus();
}

function notFound(path) {
  return h("section", {},
    h("h1", { tabindex: "-1" }, "Page not found"),
    h("p", {}, "The console has no page at ", h("code", {}, path), "."),
    h("p", {}, h("a", { href: "/projects" }, "Go to your projects")));
}

/** Same-origin links are followed by the router, unless a modifier asks for a new tab. */
function interceptLinks(event) {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest?.("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/v1/") || url.pathname.startsWith("/assets/")) return;
  event.preventDefault();
  if (url.pathname + url.hash !== location.pathname + location.hash) navigate(url.pathname);
}
