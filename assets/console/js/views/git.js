// The git connection: repository and branch, the webhook URL to give the git provider,
// the signing secret (shown once, when set or rotated) and the last delivery.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton } from "../dom.js";
import { ago } from "../format.js";

export async function gitSection({ project, signal }) {
  const canEdit = session.can("deploy");
  const facts = h("div", { "data-testid": "git-connection" });
  const secretBox = h("div", { "data-testid": "webhook-secret-box" });
  const out = outcome();
  let connection = null;

  const load = async () => {
    try {
      connection = await api.get(`/v1/projects/${seg(project.id)}/git`, { signal });
    } catch (error) {
      if (error.status !== 404) throw error;
      connection = null;
    }
    drawFacts();
  };
  const drawFacts = () => {
    if (!connection) {
      replace(facts, h("p", { class: "empty" }, "No repository connected yet."));
      return;
    }
    const webhookUrl = new URL(connection.webhookPath, location.origin).href;
    replace(facts, h("dl", { class: "facts" },
      h("dt", {}, "Repository"), h("dd", { class: "mono", "data-testid": "git-repo" }, connection.repo),
      h("dt", {}, "Branch"), h("dd", { class: "mono" }, connection.branch),
      h("dt", {}, "Webhook URL"), h("dd", {}, copyable(webhookUrl, "webhook-url")),
      h("dt", {}, "Signing secret"), h("dd", {}, connection.secretSet ? "set (shown only when set or rotated)" : "not set"),
      h("dt", {}, "Access token"), h("dd", {}, connection.accessTokenSet ? "set" : "none (public repository)"),
      h("dt", {}, "Last delivery"), h("dd", {}, connection.lastDelivery
        ? [ago(connection.lastDelivery.at), ` ${connection.lastDelivery.event ?? ""} → ${connection.lastDelivery.result ?? ""}`]
        : "none yet")),
    canEdit && connection.secretSet !== undefined
      ? h("div", { class: "actions" }, confirmButton("Rotate signing secret", "Rotate: the old secret stops working", async () => {
        try {
          const rotated = await api.post(`/v1/projects/${seg(project.id)}/git/rotate-secret`, undefined, { signal });
          showSecret(rotated.webhookSecret, "The signing secret was rotated.");
        } catch (error) { out.error(error); }
      }, { class: "secondary", "data-testid": "rotate-secret" }))
      : null);
  };
  const showSecret = (secret, why) => {
    replace(secretBox, h("div", { class: "notice ok secret", role: "status" },
      h("p", {}, why, " Copy it into the git provider's webhook settings now: it is not shown again."),
      copyable(secret, "webhook-secret")));
  };
  await load();

  let form = null;
  if (canEdit) {
    form = h("form", { class: "card", "data-testid": "git-form" },
      field("Repository", { name: "repo", required: true, autocomplete: "off", spellcheck: "false", value: connection?.repo ?? "", placeholder: "owner/name or https://…" },
        "An https URL, owner/name on GitHub, or a path on this server."),
      field("Branch", { name: "branch", autocomplete: "off", spellcheck: "false", value: connection?.branch ?? "main" }),
      field("Access token", { name: "accessToken", type: "password", autocomplete: "off" }, "Only for a private https repository; stored encrypted."),
      h("button", { type: "submit", class: "primary" }, connection ? "Update connection" : "Connect repository"),
      out.node);
    onSubmit(form, out, async ({ repo, branch, accessToken }) => {
      out.show(h("p", { role: "status" }, "Fetching the repository to check it…"));
      const connected = await api.post(`/v1/projects/${seg(project.id)}/git`,
        { repo: repo.trim(), branch: branch.trim() || "main", ...(accessToken ? { accessToken } : {}) }, { signal });
      connection = connected;
      form.elements.accessToken.value = "";
      drawFacts();
      out.ok("Connected: the repository was fetched.");
      showSecret(connected.webhookSecret, "A webhook signing secret was made.");
    });
  }
  return h("section", { "aria-labelledby": "git-title" },
    h("h2", { id: "git-title" }, "Git"), secretBox, facts,
    canEdit ? h("h3", {}, connection ? "Change the repository" : "Connect a repository") : null, form ?? out.node);
}

/** A value in a read-only field with a copy button; the field can also be selected by hand. */
export function copyable(value, testid) {
  const input = h("input", { type: "text", readonly: true, value, class: "mono", "aria-label": testid.replace("-", " "), "data-testid": testid,
    onfocus: (event) => event.target.select() });
  const button = h("button", { type: "button", class: "secondary copy-button", onclick: async () => {
    try {
      await navigator.clipboard.writeText(value);
      button.textContent = "Copied";
    } catch {
      input.select();
      button.textContent = "Press Ctrl+C";
    }
  } }, "Copy");
  return h("span", { class: "copy" }, input, button);
}
