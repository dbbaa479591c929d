// Building the page: elements from a tag, attributes and children. Text is only ever set
// as text nodes, never parsed as HTML, so a value from the API cannot become markup (the
// Content-Security-Policy's Trusted Types rule would refuse it anyway).

/** Creates an element. `attrs`: `class`, `on<event>` listeners, boolean and string attributes. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "value" || name === "checked") {
      element[name] = value;
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

/** Appends children: nodes, strings (as text), arrays of them; null and false are skipped. */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces every child of `parent`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

let nextId = 0;
/** A document-unique id, to tie labels and descriptions to their fields. */
export function uid(prefix = "f") {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A labelled form field; `input` attributes go to the control. Returns the wrapper. */
export function field(label, attrs = {}, hint = null) {
  const id = attrs.id ?? uid();
  const hintId = hint ? `${id}-hint` : null;
  const control = attrs.tag === "select"
    ? h("select", { ...attrs, tag: undefined, options: undefined, id, "aria-describedby": hintId },
        (attrs.options ?? []).map(([value, text]) => h("option", { value }, text)))
    : attrs.tag === "textarea"
      ? h("textarea", { ...attrs, tag: undefined, id, "aria-describedby": hintId })
      : h("input", { type: "text", ...attrs, id, "aria-describedby": hintId });
  if (attrs.tag === "select" && attrs.value !== undefined) control.value = attrs.value;
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    control,
    hint && h("p", { class: "hint", id: hintId }, hint));
}

/** An alert box with the API's own words; `role=alert` so screen readers announce it. */
export function errorBox(error) {
  return h("div", { class: "notice error", role: "alert" }, messageOf(error));
}

/** A notice that is announced politely. */
export function notice(text, kind = "ok") {
  return h("div", { class: `notice ${kind}`, role: "status" }, text);
}

export function messageOf(error) {
  return error?.message ?? String(error);
}

/**
 * A button that asks for a second click before acting, so a destructive action is never
 * one slip away, without a blocking `confirm()` dialog.
 */
export function confirmButton(label, confirmLabel, action, attrs = {}) {
  const wrapper = h("span", { class: "confirm" });
  const start = h("button", { type: "button", ...attrs, onclick: () => ask() }, label);
  const ask = () => {
    const yes = h("button", { type: "button", class: "danger", onclick: async () => {
      yes.disabled = true;
      try { await action(); } finally { if (yes.isConnected) reset(); }
    } }, confirmLabel);
    const no = h("button", { type: "button", class: "secondary", onclick: () => { reset(); start.focus(); } }, "Cancel");
    replace(wrapper, yes, " ", no);
    yes.focus();
  };
  const reset = () => replace(wrapper, start);
  return replace(wrapper, start);
}

/** A region that shows a result or an error for a form, replacing the previous one. */
export function outcome() {
  const region = h("div", { class: "outcome" });
  return {
    node: region,
    error(error) { replace(region, errorBox(error)); },
    ok(text) { replace(region, notice(text)); },
    show(...nodes) { replace(region, ...nodes); },
    clear() { region.replaceChildren(); },
  };
}

/**
 * Wires a form: on submit, disables its buttons, runs `action(values)` and reports an
 * error in `out`. Values are the form's named controls (checkboxes as booleans).
 */
export function onSubmit(form, out, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const buttons = [...form.querySelectorAll("button")];
    buttons.forEach((b) => { b.disabled = true; });
    form.setAttribute("aria-busy", "true");
    out.clear();
    try {
      await action(values(form));
    } catch (error) {
      if (error?.name !== "AbortError") out.error(error);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
      form.removeAttribute("aria-busy");
    }
  });
  return form;
}

function values(form) {
  const result = {};
  for (const control of form.elements) {
    if (!control.name) continue;
    result[control.name] = control.type === "checkbox" ? control.checked : control.value;
  }
  return result;
}
