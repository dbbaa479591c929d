// The account: who the token is; its registry credentials (listed for every token, added
// and removed by deploy tokens; a password is never shown back); for admin tokens, the
// account's tokens (mint, revoke) and its audit log; and, for the installation's own
// account only, Cantila's state backups with their off-site copies and "Back up now".

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton, errorBox } from "../dom.js";
import { ago, badge, bytes, duration, table } from "../format.js";

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
  parts.push(await registriesCard(signal));
  if (session.can("admin")) {
    parts.push(await tokensCard(signal), await auditCard(signal));
    // The section exists only where the API answers: any account but the installation's
    // own gets a 404 there, and then the page says nothing about state backups at all.
    const stateBackups = await stateBackupsCard(signal);
    if (stateBackups) parts.push(stateBackups);
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

async function registriesCard(signal) {
  const canEdit = session.can("deploy");
  const list = h("div", { "data-testid": "registry-list" });
  const out = outcome();
  const load = async () => {
    const { registries } = await api.get("/v1/registries", { signal });
    replace(list, table("Registries", ["Server", "Username", "Added", ...(canEdit ? ["Actions"] : [])],
      registries.map((registry) => h("tr", { "data-registry": registry.server },
        h("th", { scope: "row", class: "mono" }, registry.server),
        h("td", { class: "mono" }, registry.username),
        h("td", {}, ago(registry.createdAt)),
        canEdit ? h("td", {}, confirmButton(["Remove", h("span", { class: "visually-hidden" }, ` ${registry.server}`)], `Remove ${registry.server}`, async () => {
          try {
            await api.delete(`/v1/registries/${seg(registry.id)}`, { signal });
            await load();
          } catch (error) { out.error(error); }
        }, { class: "secondary" })) : null)),
      "No registry credentials: images are pulled anonymously."));
  };
  await load();
  let form = null;
  if (canEdit) {
    form = h("form", { class: "inline-form", "data-testid": "registry-form" },
      field("Server", { name: "server", required: true, autocomplete: "off", spellcheck: "false", maxlength: 261, placeholder: "ghcr.io" }),
      field("Username", { name: "username", required: true, autocomplete: "off", spellcheck: "false", maxlength: 255 }),
      field("Password or token", { name: "password", type: "password", required: true, autocomplete: "new-password" }),
      h("button", { type: "submit", class: "primary" }, "Add registry"),
      out.node);
    onSubmit(form, out, async ({ server, username, password }) => {
      const added = await api.post("/v1/registries", { server: server.trim(), username: username.trim(), password }, { signal });
      form.reset();
      await load();
      out.ok(`Credentials for ${added.server} saved; the password is not shown again.`);
    });
  }
  return h("section", { class: "card", "aria-labelledby": "registries-title" },
    h("h2", { id: "registries-title" }, "Registries"),
    h("p", { class: "hint" }, "Credentials for pulling private images; credentials for a server replace the earlier ones."),
    list, canEdit ? h("h3", {}, "Add credentials") : null, form ?? out.node);
}

/**
 * Cantila's own state backups (the database, the installation id, the certificates and,
 * when encrypted, the sealing key), newest first, each with its copy in S3-compatible
 * storage. Returns null when the API does not answer 200 for this account.
 */
async function stateBackupsCard(signal) {
  let first;
  try {
    first = await api.get("/v1/admin/state-backups", { signal });
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    return null;
  }
  const list = h("div", { "data-testid": "state-backup-list" });
  const out = outcome();
  out.node.dataset.testid = "state-backups-outcome";
  let timer = null;

  const remoteCell = (remote) => h("td", { "data-testid": "state-backup-remote" },
    !remote || remote.status === "none" ? "—" : [
      badge(remote.status),
      remote.key ? h("p", { class: "mono subtle" }, remote.key) : null,
      remote.error ? h("p", { class: "error-text" }, remote.error) : null,
    ]);

  const row = (backup) => h("tr", { "data-state-backup": backup.id, "data-status": backup.status },
    h("th", { scope: "row", class: "mono" }, backup.id),
    h("td", {}, backup.trigger),
    h("td", {}, badge(backup.status), backup.error ? h("p", { class: "error-text" }, backup.error) : null),
    h("td", { "data-testid": "state-backup-encrypted" }, backup.encrypted ? "encrypted"
      : backup.status === "completed" ? h("span", { class: "warning-text" }, "unencrypted: secret.key and certificates left out") : "—"),
    h("td", {}, bytes(backup.sizeBytes)),
    h("td", { class: "mono", title: backup.sha256 ?? undefined }, backup.sha256 ? `${backup.sha256.slice(0, 12)}…` : "—"),
    h("td", {}, ago(backup.createdAt)),
    h("td", {}, duration(backup.createdAt, backup.finishedAt)),
    remoteCell(backup.remote));

  const draw = (stateBackups) => {
    replace(list, table("State backups",
      ["Backup", "Trigger", "Status", "Contents", "Size", "SHA-256", "Started", "Took", "Off-site copy"],
      stateBackups.map(row), "No state backups yet."));
    // While one runs or its copy uploads, the list follows it.
    clearTimeout(timer);
    if (stateBackups.some((b) => b.status === "running" || b.remote?.status === "pending") && !signal.aborted) {
      timer = setTimeout(() => load().catch((error) => out.error(error)), 1000);
    }
  };
  const load = async () => draw((await api.get("/v1/admin/state-backups", { signal })).stateBackups);
  signal.addEventListener("abort", () => clearTimeout(timer));
  draw(first.stateBackups);

  const now = h("button", { type: "button", class: "primary", "data-testid": "state-backup-now", onclick: async () => {
    now.disabled = true;
    out.clear();
    try {
      const started = await api.post("/v1/admin/state-backups", {}, { signal });
      out.ok(`Started ${started.id}.`);
      await load();
    } catch (error) {
      if (error?.name !== "AbortError") out.error(error);
    } finally {
      now.disabled = false;
    }
  } }, "Back up now");

  return h("section", { class: "card", "aria-labelledby": "state-backups-title", "data-testid": "state-backups" },
    h("h2", { id: "state-backups-title" }, "State backups"),
    h("p", { class: "hint" }, "Cantila's own state: every account, project, env var (still sealed), domain and certificate. ",
      h("code", {}, "cantila admin restore"), " on a new server brings it back (the README's “Moving to a new server”)."),
    list, h("div", { class: "actions" }, now), out.node);
}
