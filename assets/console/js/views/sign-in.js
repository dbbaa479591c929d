// Sign-in: an API token, checked with `GET /v1/account` and kept in this tab's
// sessionStorage only (gone when the tab closes; never in a URL or a cookie).

import { session } from "../api.js";
import { h, field, outcome, onSubmit, errorBox } from "../dom.js";

export async function signInView({ navigate }) {
  const out = outcome();
  const leftover = sessionStorage.getItem("cantila.signin-message");
  if (leftover) {
    sessionStorage.removeItem("cantila.signin-message");
    out.show(errorBox({ message: leftover }));
  }
  const form = h("form", { class: "card narrow", "aria-labelledby": "sign-in-title" },
    field("API token", {
      name: "token", type: "password", autocomplete: "off", spellcheck: "false",
      required: true, placeholder: "sk_live_…", "data-testid": "token",
    }, "Mint one with cantila tokens create, or use the admin token the first start wrote to the data directory. It is kept in this browser tab only, until you sign out or close the tab."),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    out.node);
  onSubmit(form, out, async ({ token }) => {
    await session.signIn(token.trim());
    window.dispatchEvent(new CustomEvent("cantila:signed-in"));
    await navigate("/projects", { replace: true });
  });
  return h("section", { class: "sign-in" },
    h("h1", { id: "sign-in-title", tabindex: "-1" }, "Sign in to Cantila"),
    form);
}
