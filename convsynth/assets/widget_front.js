// The convsynth widget's own front-end pieces (anywidget ESM, no build step). Each piece sends what the person
// did as one custom message that carries the text from the page, so the kernel never acts on a stale value.
//   kind "input":  a line input and its button; Enter or the button send {type: "submit", text}
//   kind "code":   highlighted code that turns into a monospace editor when clicked; Tab indents, Shift+Tab
//                  dedents, Shift+Enter sends {type: "run", text}, leaving it sends {type: "save", text},
//                  Escape puts the code back
//   kind "bridge": says plainly when the kernel has gone (ipywidgets marks every view disconnected then), and
//                  turns a file path into a link that opens the file in JupyterLab or Notebook 7

const INDENT = "    ";

// Keys typed in our boxes are ours: Lumino (JupyterLab, Notebook 7) stops looking for shortcut selectors at
// this attribute, so Shift+Enter runs the step, not the notebook cell (Notebook 7 sees keys before we do).
const OWN_KEYS = "data-lm-suppress-shortcuts";

function input({ model, el }) {
  el.classList.add("cs-input");
  const box = document.createElement("input");
  box.setAttribute(OWN_KEYS, "true");
  box.type = "text";
  box.className = "cs-input-box";
  const button = document.createElement("button");
  button.className = "jupyter-button cs-input-button";
  const sync = () => {
    if (box.value !== model.get("value")) box.value = model.get("value");
    box.placeholder = model.get("placeholder");
    button.textContent = model.get("button");
    button.style.display = model.get("button") ? "" : "none";
    button.disabled = model.get("busy");
    for (const c of (model.get("button_classes") || [])) button.classList.add(c);
  };
  sync();
  model.on("change", sync);
  // value follows the typing for views of it (the prompt view); the submit does not rely on it.
  box.addEventListener("input", () => { model.set("value", box.value); model.save_changes(); });
  const submit = () => model.send({ type: "submit", text: box.value });
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    e.stopPropagation();  // keys typed here are not notebook shortcuts
  });
  button.addEventListener("click", submit);
  model.on("msg:custom", (msg) => { if (msg.type === "focus") { box.focus(); box.select(); } });
  el.append(box, button);
}

function indentLines(ta, dedent) {
  const v = ta.value, s = ta.selectionStart, e = ta.selectionEnd;
  const from = v.lastIndexOf("\n", s - 1) + 1;
  if (!dedent && s === e) {  // no selection: insert spaces to the next indent stop
    const col = s - from, n = INDENT.length - (col % INDENT.length);
    ta.setRangeText(" ".repeat(n), s, e, "end");
    return;
  }
  const to = e > s && v[e - 1] === "\n" ? e - 1 : e;
  const lines = v.slice(from, to).split("\n");
  const out = lines.map((l) => dedent ? l.replace(/^ {1,4}/, "") : INDENT + l);
  ta.setRangeText(out.join("\n"), from, to, "select");
}

function code({ model, el }) {
  el.classList.add("cs-code");
  const view = document.createElement("div");
  view.className = "cs-code-view";
  view.title = "Click to edit this step's code (Shift+Enter runs it)";
  const ta = document.createElement("textarea");
  ta.className = "cs-code-editor";
  ta.setAttribute(OWN_KEYS, "true");
  ta.spellcheck = false;
  ta.style.display = "none";
  let editing = false;
  const fit = () => { ta.rows = Math.min(Math.max(ta.value.split("\n").length, 2), 40); };
  const show = () => {
    view.innerHTML = model.get("html");
    view.classList.toggle("cs-editable", model.get("editable"));
    if (!editing) ta.value = model.get("value");
  };
  show();
  model.on("change", show);
  const open = () => {
    if (editing || !model.get("editable")) return;
    editing = true;
    ta.value = model.get("value");
    fit();
    view.style.display = "none";
    ta.style.display = "";
    ta.focus();
    // The notebook may take the focus back while it handles the same click (Notebook 7 does): take it after.
    setTimeout(() => { if (editing && document.activeElement !== ta) ta.focus(); }, 0);
  };
  const close = (send) => {
    if (!editing) return;
    editing = false;
    if (send && ta.value !== model.get("value")) model.send({ type: "save", text: ta.value });
    ta.style.display = "none";
    view.style.display = "";
  };
  view.addEventListener("click", open);
  ta.addEventListener("input", fit);
  ta.addEventListener("keydown", (e) => {
    if (e.key === "Tab") { e.preventDefault(); indentLines(ta, e.shiftKey); fit(); }
    else if (e.key === "Enter" && e.shiftKey) {
      e.preventDefault();
      const text = ta.value;
      close(false);
      model.send({ type: "run", text });
    } else if (e.key === "Escape") { ta.value = model.get("value"); close(false); }
    e.stopPropagation();  // keys typed here are not notebook shortcuts
  });
  ta.addEventListener("blur", () => setTimeout(() => { if (document.activeElement !== ta) close(true); }, 0));
  model.on("msg:custom", (msg) => { if (msg.type === "edit") open(); });
  el.append(view, ta);
}

function pageConfig() {
  const node = document.getElementById("jupyter-config-data");
  try { return node ? JSON.parse(node.textContent) : {}; } catch (e) { return {}; }
}

function fileUrl(path, home) {
  const cfg = pageConfig();
  let root = (cfg.serverRoot || "").replace(/\/+$/, "");
  if (root.startsWith("~")) root = home + root.slice(1);
  if (!root || !path.startsWith(root + "/")) return null;
  const rel = path.slice(root.length + 1).split("/").map(encodeURIComponent).join("/");
  const base = (cfg.baseUrl || "/").replace(/\/?$/, "/");
  const notebook7 = /notebook/i.test(cfg.appName || "") && !/lab/i.test(cfg.appName || "");
  if (notebook7) return base + (path.endsWith(".ipynb") ? "notebooks/" : "edit/") + rel;
  return base + "lab/tree/" + rel;
}

function bridge({ model, el }) {
  el.classList.add("cs-bridge");
  const banner = document.createElement("div");
  banner.className = "convsynth-kernel-gone";
  banner.style.display = "none";
  const link = document.createElement("div");
  link.className = "convsynth-file-link";
  const showLink = () => {
    const path = model.get("link_path");
    link.textContent = "";
    if (!path) return;
    link.append(model.get("link_text") + " ");
    const url = fileUrl(path, model.get("home"));
    const node = document.createElement(url ? "a" : "code");
    node.textContent = path.split("/").pop();
    node.title = path;
    if (url) { node.href = url; node.target = "_blank"; node.rel = "noopener"; }
    link.append(node);
    if (!url) link.append(" (" + path + ")");
  };
  showLink();
  model.on("change:link_path", showLink);
  model.on("change:link_text", showLink);
  // ipywidgets sets comm_live to false on every model when the kernel restarts or dies; the view's node gets
  // the class jupyter-widgets-disconnected. The message was kept up to date by the kernel while it lived.
  const check = () => {
    const gone = el.classList.contains("jupyter-widgets-disconnected") ||
      !!el.closest(".jupyter-widgets-disconnected");
    banner.textContent = model.get("gone_message");
    banner.style.display = gone ? "" : "none";
  };
  model.on("comm_live_update", () => setTimeout(check, 0));
  el.append(banner, link);
}

export default {
  render(ctx) {
    const kind = ctx.model.get("kind");
    if (kind === "input") input(ctx);
    else if (kind === "code") code(ctx);
    else bridge(ctx);
  },
};
