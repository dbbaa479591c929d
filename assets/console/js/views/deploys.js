// Deploy history with rollback, and starting a deploy whose live stream the build view
// then reads.

import { api, session, seg, authHeaders, readBody } from "../api.js";
import { h, outcome, replace, errorBox, confirmButton } from "../dom.js";
import { badge, ago, duration, shortSha, refLabel, table } from "../format.js";

/** Open deploy streams handed from the button that started them to the build view. */
export const handoff = new Map();

/**
 * Starts a deploy with `POST /v1/projects/:id/deploy/stream`, learns the deploy's id from
 * the response's `Content-Location` (its events URL), and opens the build view on the
 * already-open stream.
 */
export async function startDeploy(project, navigate, request = null) {
  // `request`: a git ref as a string, or the request body itself (`{ image }` for an image
  // project's tag or digest).
  const body = typeof request === "string" ? { ref: request } : request;
  const response = await fetch(`/v1/projects/${seg(project.id)}/deploy/stream`, {
    method: "POST",
    headers: authHeaders({ accept: "text/event-stream", ...(body ? { "content-type": "application/json" } : {}) }),
    body: body ? JSON.stringify(body) : undefined,
    cache: "no-store",
    credentials: "omit",
  });
  if (!response.ok) await readBody(response);
  const location = response.headers.get("content-location") ?? "";
  const deployId = /\/v1\/deploys\/([^/]+)\/events$/.exec(location)?.[1];
  if (!deployId) {
    response.body?.cancel();
    throw new Error("the API did not say which deploy it started (no Content-Location)");
  }
  handoff.set(deployId, response);
  await navigate(`/projects/${seg(project.id)}/deploys/${deployId}`);
}

export async function deploysSection({ project, base, signal, navigate, refreshHeader }) {
  const rows = [];
  const list = h("div", { "data-testid": "deploy-history" });
  const more = h("div");
  const out = outcome();
  const canDeploy = session.can("deploy");

  const row = (deploy) => h("tr", { "data-deploy": deploy.id, "data-status": deploy.status },
    h("th", { scope: "row", class: "mono" }, h("a", { href: `${base}/deploys/${seg(deploy.id)}` }, deploy.id)),
    h("td", {}, badge(deploy.status), deploy.failedStep ? h("span", { class: "error-text" }, ` at ${deploy.failedStep}`) : null),
    h("td", {}, deploy.rollbackOf ? `rollback of ${deploy.rollbackOf}` : deploy.trigger),
    h("td", {}, refLabel(deploy.ref), h("span", { class: "mono" }, shortSha(deploy.commitSha)),
      deploy.commitMessage ? h("span", { class: "subtle" }, ` ${firstLine(deploy.commitMessage)}`) : null),
    h("td", {}, ago(deploy.createdAt)),
    h("td", {}, duration(deploy.createdAt, deploy.finishedAt)),
    canDeploy ? h("td", {}, rollbackable(deploy)
      ? confirmButton("Roll back", "Roll back to this deploy", () => rollback(deploy), { class: "secondary", "data-testid": "rollback" })
      : null) : null);

  const rollback = async (deploy) => {
    try {
      const created = await api.post(`/v1/projects/${seg(project.id)}/rollback`, { deployId: deploy.id }, { signal });
      await refreshHeader();
      await navigate(`${base}/deploys/${seg(created.deployId)}`);
    } catch (error) {
      out.error(error);
    }
  };

  const headings = ["Deploy", "Status", "Trigger", "Source", "Started", "Took", ...(canDeploy ? ["Actions"] : [])];
  const draw = () => replace(list, table("Deploy history", headings, rows, "No deploys yet."));
  const load = async (cursor) => {
    const page = await api.get(`/v1/projects/${seg(project.id)}/deploys${cursor ? `?cursor=${seg(cursor)}` : ""}`, { signal });
    rows.push(...page.deploys.map(row));
    draw();
    replace(more, page.nextCursor
      ? h("button", { type: "button", class: "secondary", onclick: () => load(page.nextCursor).catch((e) => replace(more, errorBox(e))) }, "Show older deploys")
      : null);
  };
  await load(null);
  return h("section", { "aria-labelledby": "deploys-title" },
    h("h2", { id: "deploys-title" }, "Deploy history"),
    canDeploy ? h("p", { class: "hint" }, "Rolling back re-releases an earlier deploy's image and environment without a rebuild.") : null,
    out.node, list, more);
}

/** The API re-releases deploys that ran and were replaced; the serving one needs no rollback. */
function rollbackable(deploy) {
  return deploy.status === "superseded" && deploy.plan !== null && deploy.image !== null;
}

function firstLine(text) {
  const line = text.split("\n")[0];
  return line.length > 72 ? `${line.slice(0, 71)}…` : line;
}
