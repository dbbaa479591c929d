// The image source: a project whose releases are pulled from a registry instead of built
// from git. The connected reference, the registry webhook's URL and its secret (shown
// once, when connected), connecting (replacing a git connection only when asked: a
// project has one source at a time), disconnecting, and deploying one tag or digest once.

import { api, session, seg } from "../api.js";
import { h, field, outcome, onSubmit, replace, confirmButton } from "../dom.js";
import { ago } from "../format.js";
import { copyable } from "./git.js";
import { startDeploy } from "./deploys.js";

export async function imageSection({ project, signal, navigate }) {
  const canEdit = session.can("deploy");
  const path = `/v1/projects/${seg(project.id)}/image`;
  const facts = h("div", { "data-testid": "image-source" });
  const secretBox = h("div", { "data-testid": "image-secret-box" });
  const forms = h("div");
  const out = outcome();
  let source = null;
  let git = null;

  const optional = async (url) => {
    try {
      return await api.get(url, { signal });
    } catch (error) {
      if (error.status === 404) return null;
      throw error;
    }
  };
  const load = async () => {
    [source, git] = await Promise.all([optional(path), optional(`/v1/projects/${seg(project.id)}/git`)]);
    draw();
  };

  const draw = () => {
    if (!source) {
      replace(facts, h("p", { class: "empty" }, "No image connected.",
        git ? [" This project builds from the git repository ", h("span", { class: "mono" }, git.repo), "."] : null));
    } else {
      replace(facts, h("dl", { class: "facts" },
        h("dt", {}, "Image"), h("dd", { class: "mono", "data-testid": "image-reference" }, source.image),
        h("dt", {}, "Webhook URL"), h("dd", {}, copyable(new URL(source.webhookPath, location.origin).href, "image-webhook-url")),
        h("dt", {}, "Webhook secret"), h("dd", {}, "set (shown only when connected); send it as Authorization: Bearer, or as ?token= for Docker Hub"),
        h("dt", {}, "Last delivery"), h("dd", {}, source.lastDeliveryAt
          ? [ago(source.lastDeliveryAt), ` → ${source.lastDeliveryResult ?? ""}`] : "none yet"),
        h("dt", {}, "Connected"), h("dd", {}, ago(source.createdAt))),
      canEdit ? h("div", { class: "actions" }, confirmButton("Disconnect image", "Disconnect: the running release keeps serving", async () => {
        try {
          await api.delete(path, { signal });
          secretBox.replaceChildren();
          await load();
          out.ok("The image was disconnected.");
        } catch (error) { out.error(error); }
      }, { class: "secondary", "data-testid": "disconnect-image" })) : null);
    }
    if (canEdit) replace(forms, connectForm(), source ? deployForm() : null);
  };

  const connectForm = () => {
    const connectOut = outcome();
    const form = h("form", { class: "card", "data-testid": "image-form" },
      h("h3", {}, source ? "Change the image" : "Connect an image"),
      field("Image reference", { name: "image", required: true, autocomplete: "off", spellcheck: "false", maxlength: 512,
        value: source?.image ?? "", placeholder: "registry.example.com/team/app:1.4" },
        "[registry[:port]/]name[:tag][@sha256:digest]; without a tag, latest. Connecting pulls nothing: the next deploy does."),
      git ? h("div", { class: "field checkbox" },
        h("input", { type: "checkbox", name: "replace", id: "image-replace" }),
        h("label", { for: "image-replace" }, `Replace the git connection (${git.repo}): a project has one source at a time`)) : null,
      h("button", { type: "submit", class: "primary" }, source ? "Change image" : "Connect image"),
      connectOut.node);
    onSubmit(form, connectOut, async ({ image, replace: replaceGit }) => {
      const connected = await api.post(path, { image: image.trim(), replace: Boolean(replaceGit) }, { signal });
      replace(secretBox, h("div", { class: "notice ok secret", role: "status" },
        h("p", {}, "The image is connected. Copy the webhook secret into the registry's notification settings now: it is not shown again."),
        copyable(connected.webhookSecret, "image-webhook-secret")));
      await load();
      out.ok(`Connected ${connected.image}.`);
    });
    return form;
  };

  const deployForm = () => {
    const deployOut = outcome();
    const form = h("form", { class: "card inline-form", "data-testid": "image-deploy-form" },
      field("Tag or digest", { name: "image", required: true, autocomplete: "off", spellcheck: "false", maxlength: 512, placeholder: "1.5 or sha256:…" },
        "Deploys this tag or digest of the connected repository once; the connected tag stays."),
      h("button", { type: "submit", class: "primary" }, "Deploy this tag"),
      deployOut.node);
    onSubmit(form, deployOut, async ({ image }) => {
      await startDeploy(project, navigate, { image: image.trim() });
    });
    return form;
  };

  await load();
  return h("section", { "aria-labelledby": "image-title" },
    h("h2", { id: "image-title" }, "Image"),
    h("p", { class: "hint" }, "Take releases from a registry image instead of a git repository; a push of the connected tag, announced by the registry's webhook, redeploys."),
    secretBox, facts, out.node, forms);
}
