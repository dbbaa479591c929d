// The console's entry point: restores the session, draws the global navigation and hands
// every path to the router. Pages live in `views/`; a project's sections are listed in
// `views/project.js`.

import { session } from "./api.js";
import { h, replace, errorBox } from "./dom.js";
import { start, navigate } from "./router.js";
import { signInView } from "./views/sign-in.js";
import { projectsView, newProjectView } from "./views/projects.js";
import { projectView } from "./views/project.js";
import { accountView } from "./views/account.js";

const main = document.getElementById("main");
const nav = document.getElementById("global-nav");

const ROUTES = [
  ["/sign-in", signInView],
  ["/projects", projectsView],
  ["/projects/new", newProjectView],
  ["/projects/:id", projectView],
  ["/projects/:id/:section", projectView],
  ["/projects/:id/:section/:item", projectView],
  ["/account", accountView],
];

/** Paths that need no token; everything else sends a signed-out person to sign in. */
function guard(path) {
  if (path === "/") return session.account ? "/projects" : "/sign-in";
  if (path === "/sign-in") return session.account ? "/projects" : null;
  return session.account ? null : "/sign-in";
}

function drawNav() {
  if (!session.account) {
    replace(nav);
    return;
  }
  const here = location.pathname;
  const link = (href, text) => h("a", { href, "aria-current": here === href || here.startsWith(`${href}/`) ? "page" : undefined }, text);
  replace(nav,
    h("ul", {},
      h("li", {}, link("/projects", "Projects")),
      h("li", {}, link("/account", "Account"))),
    h("span", { class: "who", "data-testid": "who" },
      session.account.handle, " · ", h("span", { class: "scope" }, `${session.account.scope} token`)),
    h("button", { type: "button", class: "secondary", onclick: signOut }, "Sign out"));
}

function signOut() {
  session.signOut();
  drawNav();
  navigate("/sign-in");
}

async function boot() {
  try {
    await session.resume();
  } catch (error) {
    // A kept token that no longer works: sign in again, saying why.
    sessionStorage.setItem("cantila.signin-message", error.message);
  }
  window.addEventListener("cantila:navigated", drawNav);
  window.addEventListener("cantila:signed-in", drawNav);
  window.addEventListener("cantila:unauthenticated", () => {
    if (!session.account) return;
    session.signOut();
    sessionStorage.setItem("cantila.signin-message", "the token stopped working (revoked or deleted); sign in again");
    drawNav();
    navigate("/sign-in", { replace: true });
  });
  drawNav();
  await start(main, ROUTES, guard);
}

boot().catch((error) => replace(main, errorBox(error)));
