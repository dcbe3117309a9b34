// The web chat of `agent serve`: no framework, no build step, nothing fetched from elsewhere.
// Every text from the model, a tool or a web page reaches the page as a text node (never as HTML),
// so nothing it holds can run; links are kept only when they are http(s).
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") || sessionStorage.getItem("agent-token") || "";
if (params.has("token")) {
  sessionStorage.setItem("agent-token", token);
  history.replaceState(null, "", location.pathname); // the token leaves the address bar (and the history)
}
const $ = (id) => document.getElementById(id);
const state = { session: null, after: -1, busy: false, files: [], reader: null, run: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

async function api(method, path, body) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body });
  const data = response.status === 204 ? {} : await response.json();
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

function safeUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch (e) { return null; }
}

// ---- Markdown (a safe subset), math, citations, code -----------------------------------------------

const TEX = { "\\alpha": "α", "\\beta": "β", "\\gamma": "γ", "\\delta": "δ", "\\pi": "π", "\\theta": "θ",
  "\\lambda": "λ", "\\mu": "μ", "\\sigma": "σ", "\\omega": "ω", "\\times": "×", "\\cdot": "·", "\\pm": "±",
  "\\leq": "≤", "\\geq": "≥", "\\neq": "≠", "\\approx": "≈", "\\infty": "∞", "\\sum": "∑", "\\int": "∫",
  "\\sqrt": "√", "\\to": "→", "\\rightarrow": "→", "\\equiv": "≡", "\\mod": "mod", "\\bmod": "mod", "\\quad": " " };
const SUB = { 0: "₀", 1: "₁", 2: "₂", 3: "₃", 4: "₄", 5: "₅", 6: "₆", 7: "₇", 8: "₈", 9: "₉", "=": "₌", "+": "₊",
  "-": "₋", i: "ᵢ", j: "ⱼ", n: "ₙ", x: "ₓ", k: "ₖ" };
const SUP = { 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹", n: "ⁿ", "-": "⁻", "+": "⁺" };

function math(tex, display) {
  let text = tex.replace(/\\[a-zA-Z]+/g, (m) => (m in TEX ? TEX[m] : m));
  text = text.replace(/\\frac\{([^{}]*)\}\{([^{}]*)\}/g, "($1)/($2)");
  text = text.replace(/\^(?:\{([0-9n+-]+)\}|([0-9n]))/g, (m, a, b) => [...(a || b)].map((c) => SUP[c] || c).join(""));
  text = text.replace(/_(?:\{([0-9ijnxk=+-]+)\}|([0-9ijnxk]))/g, (m, a, b) => [...(a || b)].map((c) => SUB[c] || c).join(""));
  text = text.replace(/[{}]/g, "");
  return el(display ? "div" : "span", { class: display ? "math display" : "math", title: tex }, text);
}

const INLINE = /(`[^`]+`)|(\$[^$\n]+\$)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[[^\]]+\]\([^)\s]+\))|(【[^】]*】)/;

function inline(text, cite) {
  const out = [];
  while (text) {
    const match = INLINE.exec(text);
    if (!match) { out.push(text); break; }
    if (match.index) out.push(text.slice(0, match.index));
    const token = match[0];
    if (match[1]) out.push(el("code", {}, token.slice(1, -1)));
    else if (match[2]) out.push(math(token.slice(1, -1), false));
    else if (match[3]) out.push(el("strong", {}, inline(token.slice(2, -2), cite)));
    else if (match[4]) out.push(el("em", {}, inline(token.slice(1, -1), cite)));
    else if (match[5]) {
      const [, label, href] = /^\[([^\]]+)\]\(([^)\s]+)\)$/.exec(token);
      const url = safeUrl(href);
      out.push(url ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, label) : label);
    } else out.push(cite(token));
    text = text.slice(match.index + token.length);
  }
  return out;
}

function markdown(source, cite = (t) => t) {
  const root = el("div", { class: "md" });
  const lines = source.replace(/\r\n/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^```\s*([\w+-]*)/.exec(line);
    if (fence) {
      const body = [];
      for (i++; i < lines.length && !/^```/.test(lines[i]); i++) body.push(lines[i]);
      i++;
      root.append(codeBlock(body.join("\n"), fence[1]));
    } else if (/^\$\$/.test(line.trim())) {
      const body = [line.trim().slice(2)];
      if (!/\$\$$/.test(line.trim().slice(2))) for (i++; i < lines.length && !/\$\$/.test(lines[i]); i++) body.push(lines[i]);
      body.push(i < lines.length && i > 0 && lines[i] !== line ? lines[i] : "");
      i++;
      root.append(math(body.join(" ").replace(/\$\$/g, "").trim(), true));
    } else if (/^#{1,6}\s/.test(line)) {
      const level = /^#+/.exec(line)[0].length;
      root.append(el("h" + Math.min(level + 2, 6), {}, inline(line.replace(/^#+\s*/, ""), cite)));
      i++;
    } else if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const list = el(ordered ? "ol" : "ul");
      for (; i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i]); i++) {
        list.append(el("li", {}, inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ""), cite)));
      }
      root.append(list);
    } else if (/^\s*\|.*\|\s*$/.test(line) && /^\s*\|?\s*:?-{3,}/.test(lines[i + 1] || "")) {
      const cells = (row) => row.trim().replace(/^\||\|$/g, "").split("|").map((cell) => cell.trim());
      const head = el("tr", {}, cells(line).map((cell) => el("th", {}, inline(cell, cite))));
      const body = el("tbody");
      for (i += 2; i < lines.length && /^\s*\|/.test(lines[i]); i++) {
        body.append(el("tr", {}, cells(lines[i]).map((cell) => el("td", {}, inline(cell, cite)))));
      }
      root.append(el("div", { class: "table" }, el("table", {}, el("thead", {}, head), body)));
    } else if (/^>\s?/.test(line)) {
      const quote = [];
      for (; i < lines.length && /^>\s?/.test(lines[i]); i++) quote.push(lines[i].replace(/^>\s?/, ""));
      root.append(el("blockquote", {}, markdown(quote.join("\n"), cite)));
    } else if (!line.trim()) {
      i++;
    } else {
      const para = [];
      for (; i < lines.length && lines[i].trim() && !/^(```|#{1,6}\s|>|\s*([-*+]|\d+[.)])\s|\$\$|\s*\|)/.test(lines[i]); i++) para.push(lines[i]);
      if (!para.length) para.push(lines[i++]);
      root.append(el("p", {}, inline(para.join("\n"), cite)));
    }
  }
  return root;
}

const KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif else except " +
  "finally for from global if import in is lambda nonlocal not or pass raise return try while with yield print").split(" "));

function unfence(code) { // GLM-4 may fence a python body: the fence is no part of the code
  const fenced = /^\s*```[\w+-]*\n([\s\S]*?)\n?```\s*$/.exec(code);
  return fenced ? fenced[1] : code;
}

function codeBlock(code, lang) {
  const pre = el("pre", { class: "code" });
  const target = el("code", { "data-lang": lang || "" });
  const pattern = /(#[^\n]*)|("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')|(\b\d+(?:\.\d+)?\b)|([A-Za-z_]\w*)/g;
  let last = 0;
  for (const m of code.matchAll(pattern)) {
    if (m.index > last) target.append(code.slice(last, m.index));
    const kind = m[1] ? "com" : m[2] ? "str" : m[3] ? "num" : KEYWORDS.has(m[4]) ? "kw" : null;
    target.append(kind ? el("span", { class: "tok-" + kind }, m[0]) : m[0]);
    last = m.index + m[0].length;
  }
  target.append(code.slice(last));
  pre.append(target);
  return pre;
}

// ---- One turn of the conversation ---------------------------------------------------------------

function newRun(text, files) {
  const chat = $("chat");
  chat.append(el("div", { class: "msg user" }, el("div", {}, text),
    files.length ? el("div", { class: "files" }, "files: " + files.join(", ")) : null));
  const box = el("div", { class: "msg assistant" });
  chat.append(box);
  state.run = { box, step: null, steps: {}, live: null, outputs: {}, lastTool: null };
  scroll();
}

function currentStep(index) {
  const run = state.run;
  if (!run.steps[index]) {
    const body = el("div", { class: "body" });
    const details = el("details", { class: "step", open: "" }, el("summary", {}, "Step " + index), body);
    run.box.append(details);
    run.steps[index] = { details, body, live: null, summary: details.firstChild };
  }
  return run.steps[index];
}

function artifactView(artifact) {
  const url = artifact.url; // the token travels in the page's cookie, not in the address
  if (artifact.kind === "image") {
    return el("figure", {}, el("img", { src: url, alt: artifact.name, loading: "lazy" }),
      el("figcaption", {}, el("a", { href: url, download: artifact.name, class: "artifact-link" }, artifact.name)));
  }
  return el("div", {}, el("a", { href: url, download: artifact.name, class: "artifact-link" }, artifact.name));
}

function citeFor(citations) {
  const order = [];
  const byId = Object.fromEntries(citations.map((c) => [String(c.id), c]));
  const cite = (token) => {
    const id = token.slice(1, -1).split("†")[0].trim();
    const source = byId[id];
    const url = source && safeUrl(source.url);
    if (!url) return token;
    if (!order.includes(id)) order.push(id);
    return el("a", { class: "cite", href: url, target: "_blank", rel: "noopener noreferrer",
      title: source.title || url }, "[" + (order.indexOf(id) + 1) + "]");
  };
  return { cite, order, byId };
}

function handle(event) {
  const run = state.run;
  if (!run) return;
  const step = event.step !== undefined ? currentStep(event.step) : null;
  switch (event.type) {
    case "token":
      if (!step.live) step.live = step.body.appendChild(el("div", { class: "live" }));
      step.live.append(event.text);
      break;
    case "model_turn": {
      if (step.live) { step.live.remove(); step.live = null; }
      const turn = event.turn;
      if (turn.reasoning) step.body.append(el("div", { class: "label" }, "Reasoning"), el("div", { class: "live" }, turn.reasoning));
      if (turn.tool_calls && turn.tool_calls.length) {
        if (turn.content) step.body.append(el("div", { class: "label" }, "Thought"), markdown(turn.content));
      } else {
        step.details.open = false;
        step.summary.textContent = "Step " + event.step + " · answer";
      }
      break;
    }
    case "tool_call": {
      const call = event.call;
      const code = unfence(call.body || JSON.stringify(call.arguments || {}, null, 2));
      step.summary.textContent = "Step " + event.step + " · " + call.name;
      step.body.append(el("div", { class: "label" }, "Call · " + call.name), codeBlock(code, call.name));
      run.outputs[call.id] = step.body.appendChild(el("pre", { class: "output" }));
      run.lastTool = run.outputs[call.id];
      break;
    }
    case "tool_stream":
      if (run.lastTool) run.lastTool.append(event.text);
      break;
    case "tool_result": {
      const obs = event.observation;
      const out = run.outputs[obs.call_id] || step.body.appendChild(el("pre", { class: "output" }));
      out.textContent = obs.content;
      if (obs.is_error) out.classList.add("error");
      out.before(el("div", { class: "label" }, "Output"));
      run.lastStepBody = step.body;
      break;
    }
    case "artifact":
      (run.lastStepBody || run.box).append(artifactView(event));
      break;
    case "approval_request": {
      const box = el("div", { class: "approval" }, el("div", {}, "Run " + event.call.name + "?"),
        codeBlock(event.call.body || JSON.stringify(event.call.arguments || {}, null, 2), event.call.name));
      const answer = (approve) => async () => {
        box.querySelectorAll("button").forEach((b) => (b.disabled = true));
        try { await api("POST", event.url, { approve }); } catch (e) { status(e.message, true); }
        box.append(el("div", { class: "status" }, approve ? "approved" : "denied"));
      };
      box.append(el("button", { type: "button", class: "primary", onclick: answer(true) }, "Approve"),
        el("button", { type: "button", onclick: answer(false) }, "Deny"));
      (step ? step.body : run.box).append(box);
      break;
    }
    case "final_answer": {
      const { cite, order, byId } = citeFor(event.citations || []);
      const answer = el("div", { class: "answer" }, markdown(event.answer, cite));
      if (order.length) {
        answer.append(el("div", { class: "sources" }, el("div", { class: "label" }, "Sources"),
          el("ol", {}, order.map((id) => el("li", {}, el("a", { href: safeUrl(byId[id].url), target: "_blank",
            rel: "noopener noreferrer" }, byId[id].title || byId[id].url))))));
      }
      run.box.append(answer);
      break;
    }
    case "error":
      run.box.append(el("div", { class: "status error" }, "error: " + event.message));
      break;
    case "notice":
      run.box.append(el("div", { class: "status" }, event.source + ": " + event.message));
      break;
    case "run_finished": {
      const result = event.result;
      if (result && result.status !== "answered") {
        run.box.append(el("div", { class: "status" }, result.status === "interrupted" ? "stopped" : result.status));
      }
      setBusy(false);
      break;
    }
  }
  scroll();
}

function scroll() { const chat = $("chat"); chat.scrollTop = chat.scrollHeight; }
function status(text, error) { (state.run ? state.run.box : $("chat")).append(el("div", { class: error ? "status error" : "status" }, text)); }

function setBusy(busy) {
  state.busy = busy;
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.dataset.busy = busy ? "1" : "";
}

// ---- The event stream (fetch, so the token travels in a header) -------------------------------

async function listen(session) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  while (state.session === session) {
    try {
      const controller = new AbortController();
      state.reader = controller;
      const response = await fetch(`/api/sessions/${session}/events?after=${state.after}`, { headers, signal: controller.signal });
      if (!response.ok) throw new Error("events: " + response.status);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
          let id = null, data = "";
          for (const line of block.split(/\r?\n/)) {
            if (line.startsWith("id:")) id = Number(line.slice(3).trim());
            else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
          }
          if (!data || state.session !== session) continue;
          if (id !== null) state.after = id;
          handle(JSON.parse(data));
        }
      }
    } catch (e) {
      if (state.session !== session) return;
      if (String(e.message).includes("404")) return;
    }
    await new Promise((r) => setTimeout(r, 1000)); // reconnect, from the last event seen
  }
}

async function newChat() {
  const old = state.session;
  state.session = null;
  if (state.reader) state.reader.abort();
  if (old) api("DELETE", `/api/sessions/${old}`).catch(() => {});
  $("chat").replaceChildren();
  state.run = null;
  state.after = -1;
  setBusy(false);
  try {
    const created = await api("POST", "/api/sessions");
    state.session = created.id;
    listen(created.id);
  } catch (e) {
    $("chat").append(el("div", { class: "status error" }, e.message));
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if ((!text && !state.files.length) || state.busy || !state.session) return;
  const form = new FormData();
  form.append("text", text);
  for (const file of state.files) form.append("files", file, file.name);
  const names = state.files.map((f) => f.name);
  newRun(text, names);
  setBusy(true);
  try {
    await api("POST", `/api/sessions/${state.session}/messages`, form);
    $("prompt").value = "";
    state.files = [];
    showAttached();
  } catch (e) {
    status(e.message, true);
    setBusy(false);
  }
}

function showAttached() {
  $("attached").replaceChildren(...state.files.map((f) => el("span", {}, f.name)));
}

function attach(files) {
  state.files.push(...files);
  showAttached();
}

async function showInfo() {
  try {
    const info = await api("GET", "/api/info");
    const rows = [["Model", info.model], ["Tools", info.tools.join(", ") || "none"], ["Policy", info.policy],
      ["Needs approval", info.require_approval.join(", ") || "nothing"],
      ["Uploads", `${info.limits.max_files} files, ${info.limits.max_file_mb} MB each, ${info.limits.max_total_mb} MB in all`],
      ["Steps per turn", String(info.limits.max_steps)]];
    $("info").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  } catch (e) {
    $("info").replaceChildren(el("dd", { class: "status error" }, e.message));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => state.session && api("POST", `/api/sessions/${state.session}/cancel`).catch(() => {}));
  $("new-chat").addEventListener("click", newChat);
  $("files").addEventListener("change", (e) => { attach([...e.target.files]); e.target.value = ""; });
  $("panel-toggle").addEventListener("click", () => {
    const open = $("panel").classList.toggle("open");
    $("panel-toggle").setAttribute("aria-expanded", String(open));
  });
  let depth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; $("drop-hint").hidden = false; });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop-hint").hidden = true; } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    $("drop-hint").hidden = true;
    attach([...e.dataTransfer.files]);
  });
  window.addEventListener("pagehide", () => {
    if (state.session) fetch(`/api/sessions/${state.session}`, { method: "DELETE", keepalive: true,
      headers: token ? { Authorization: "Bearer " + token } : {} });
  });
  showInfo();
  newChat();
});
