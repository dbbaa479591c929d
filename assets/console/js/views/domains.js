// Every hostname of a project (default and aliases) with its certificate and DNS state,
// and the form that attaches or removes an alias.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton } from "../dom.js";
import { badge, table } from "../format.js";

export async function domainsSection({ project, signal }) {
  const canEdit = session.can("deploy");
  const list = h("div", { "data-testid": "domain-list" });
  const out = outcome();
  const load = async () => {
    const { domains } = await api.get(`/v1/projects/${seg(project.id)}/domains`, { signal });
    replace(list, table("Hostnames", ["Hostname", "Kind", "Certificate", "Resolves to", ...(canEdit ? ["Actions"] : [])],
      domains.map((domain) => h("tr", { "data-hostname": domain.hostname },
        h("th", { scope: "row", class: "mono" }, h("a", { href: `http://${domain.hostname}`, rel: "noopener noreferrer", target: "_blank" }, domain.hostname)),
        h("td", {}, domain.kind),
        h("td", {}, certificate(domain.certificate)),
        h("td", { class: "mono" }, domain.resolvesTo === null ? "lookup timed out"
          : domain.resolvesTo.length === 0 ? "does not resolve" : domain.resolvesTo.join(", ")),
        canEdit ? h("td", {}, domain.kind === "alias"
          ? confirmButton(["Remove", h("span", { class: "visually-hidden" }, ` ${domain.hostname}`)], `Remove ${domain.hostname}`, async () => {
            try {
              await api.delete(`/v1/projects/${seg(project.id)}/aliases/${seg(domain.hostname)}`, { signal });
              out.ok(`${domain.hostname} removed.`);
              await load();
            } catch (error) { out.error(error); }
          }, { class: "secondary" })
          : null) : null))));
  };
  await load();

  let form = null;
  if (canEdit) {
    form = h("form", { class: "inline-form", "data-testid": "alias-form" },
      field("Alias hostname", { name: "hostname", required: true, autocomplete: "off", spellcheck: "false", placeholder: "www.example.com" },
        "Point the name's DNS at this server; a certificate is requested once it routes here."),
      h("button", { type: "submit", class: "primary" }, "Add alias"),
      out.node);
    onSubmit(form, out, async ({ hostname }) => {
      const alias = await api.post(`/v1/projects/${seg(project.id)}/aliases`, { hostname: hostname.trim() }, { signal });
      form.reset();
      out.ok(`${alias.hostname} attached; it routes now.`);
      await load();
    });
  }
  return h("section", { "aria-labelledby": "domains-title" },
    h("h2", { id: "domains-title" }, "Domains and certificates"), list,
    canEdit ? h("h3", {}, "Add an alias") : null, form ?? out.node);
}

function certificate(cert) {
  return h("div", { class: "cert" },
    badge(cert.status),
    cert.issuer ? h("span", { class: "subtle" }, ` ${cert.issuer}`) : null,
    cert.expiresAt ? h("span", { class: "subtle" }, ` · expires ${new Date(cert.expiresAt).toLocaleDateString()}`) : null,
    cert.error ? h("p", { class: "error-text" }, cert.error) : null);
}
