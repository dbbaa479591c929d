// The account: who the token is; for admin tokens, the account's tokens (mint, revoke)
// and its audit log.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton, errorBox } from "../dom.js";
import { ago, table } from "../format.js";

export async function accountView({ signal }) {
  // Read afresh: the scope shown is the token's scope now.
  const account = await api.get("/v1/account", { signal });
  session.account = account;
  const parts = [
    h("h1", { tabindex: "-1" }, "Account"),
    h("dl", { class: "facts card" },
      h("dt", {}, "Handle"), h("dd", {}, account.handle),
      h("dt", {}, "Account id"), h("dd", { class: "mono" }, account.id),
      h("dt", {}, "This token"), h("dd", { class: "mono" }, account.tokenId ?? "—"),
      h("dt", {}, "Scope"), h("dd", { "data-testid": "scope" }, account.scope)),
  ];
  if (session.can("admin")) {
    parts.push(await tokensCard(signal), await auditCard(signal));
  } else {
    parts.push(h("p", { class: "hint" }, "Tokens and the audit log need an admin token."));
  }
  return h("section", {}, ...parts);
}

async function tokensCard(signal) {
  const list = h("div");
  const out = outcome();
  const load = async () => {
    const { tokens } = await api.get("/v1/tokens", { signal });
    replace(list, table("Tokens", ["Token", "Name", "Scope", "Created", "Last used", "State"],
      tokens.map((token) => h("tr", {},
        h("th", { scope: "row", class: "mono" }, `${token.prefix}…`),
        h("td", {}, token.name ?? "—"),
        h("td", {}, token.scope),
        h("td", {}, ago(token.createdAt)),
        h("td", {}, ago(token.lastUsedAt)),
        h("td", {}, token.revokedAt ? ["revoked ", ago(token.revokedAt)]
          : token.id === session.account.tokenId ? "in use here"
          : confirmButton(["Revoke", h("span", { class: "visually-hidden" }, ` ${token.prefix}`)], "Revoke now", async () => {
            try {
              await api.delete(`/v1/tokens/${seg(token.id)}`, { signal });
              await load();
            } catch (error) { out.error(error); }
          }, { class: "secondary" }))))));
  };
  await load();
  const form = h("form", { class: "inline-form" },
    field("Scope", { tag: "select", name: "scope", options: [["read", "read"], ["deploy", "deploy"], ["admin", "admin"]] }),
    field("Name", { name: "name", autocomplete: "off", maxlength: 64 }),
    h("button", { type: "submit", class: "primary" }, "Mint token"),
    out.node);
  onSubmit(form, out, async ({ scope, name }) => {
    const created = await api.post("/v1/tokens", { scope, ...(name.trim() ? { name: name.trim() } : {}) }, { signal });
    form.reset();
    out.show(h("div", { class: "notice ok secret", role: "status" },
      h("p", {}, "Copy the new token now: only its hash is kept."),
      h("input", { type: "text", readonly: true, value: created.token, class: "mono", "aria-label": "new token", onfocus: (e) => e.target.select() })));
    await load();
  });
  return h("section", { class: "card", "aria-labelledby": "tokens-title" },
    h("h2", { id: "tokens-title" }, "Tokens"), list, h("h3", {}, "Mint a token"), form);
}

async function auditCard(signal) {
  const rows = [];
  const list = h("div");
  const more = h("div");
  const load = async (cursor) => {
    const page = await api.get(`/v1/audit${cursor ? `?cursor=${seg(cursor)}` : ""}`, { signal });
    rows.push(...page.entries.map((entry) => h("tr", {},
      h("td", {}, ago(entry.at)),
      h("td", { class: "mono" }, entry.action),
      h("td", { class: "mono" }, entry.target ?? "—"),
      h("td", { class: "mono" }, entry.actor),
      h("td", { class: "mono" }, entry.clientAddr ?? "—"))));
    replace(list, table("Audit log", ["When", "Action", "Target", "By", "From"], rows, "No entries."));
    replace(more, page.nextCursor
      ? h("button", { type: "button", class: "secondary", onclick: () => load(page.nextCursor).catch((e) => replace(more, errorBox(e))) }, "Show older entries")
      : null);
  };
  await load(null);
  return h("section", { class: "card", "aria-labelledby": "audit-title" },
    h("h2", { id: "audit-title" }, "Audit log"), list, more);
}
