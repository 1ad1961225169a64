// camlens serve: the page is a client of the JSON API (docs/serve.md). Everything the server or
// the user supplies is shown with textContent, never parsed as HTML.
"use strict";

const state = {
  model: null,          // GET /api/model
  file: null,           // the uploaded File
  image: null,          // its pixels as an ImageData at the image's own size
  target: null,         // null: the predicted class
  results: {},          // method -> API answer, with .values (Uint8 map) added
  request: 0,           // the latest round of requests; older answers are dropped
};
const $ = (id) => document.getElementById(id);

function token() {
  const match = /(?:^|[#&])token=([^&]*)/.exec(location.hash);
  if (match) sessionStorage.setItem("camlens-token", decodeURIComponent(match[1]));
  return sessionStorage.getItem("camlens-token") || "";
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { "X-Camlens-Token": token() });
  const response = await fetch("/api/" + path, Object.assign({}, options, { headers }));
  const kind = response.headers.get("content-type") || "";
  const body = kind.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) throw new Error((body && body.error) || response.status + " " + response.statusText);
  return body;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

// ------------------------------------------------------------------ model and controls
async function loadModel() {
  const model = await api("model");
  state.model = model;
  $("model-info").textContent =
    `${model.spec} · ${model.size}×${model.size} · ${model.classes} classes · ${model.device}`;
  const methods = $("methods");
  for (const method of model.methods) {
    const box = el("input", { type: "checkbox", value: method.name, onchange: explainAll });
    if (method.name === "gradcam") box.checked = true;
    methods.append(el("label", { title: method.paper }, box, " " + method.name));
  }
  const layer = $("layer");
  layer.append(el("option", { value: "auto", text: `auto (${model.auto || "none"})` }));
  for (const info of model.layers) {
    const mark = info.auto ? " ★ auto" : "";
    layer.append(el("option", { value: info.name, text: `${info.name} ${info.shape.join("×")}${mark}` }));
  }
  for (const name of Object.keys(model.colormaps)) $("colormap").append(el("option", { value: name, text: name }));
  $("prompt-form").hidden = !model.prompts;
  if (model.prompts) showPrompts(model.labels || []);
}

// an image-text model: its classes are prompts; a typed one is added (POST /api/prompts)
function showPrompts(labels) {
  state.model.labels = labels;
  state.model.classes = labels.length;
  $("model-info").textContent =
    `${state.model.spec} · ${state.model.size}×${state.model.size} · ${labels.length} classes · ${state.model.device}`;
  $("prompts").replaceChildren(...labels.map((label) => el("li", { text: label })));
}

async function addPrompt(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text) return;
  try {
    const answer = await api("prompts", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompts: [...state.model.labels, text] }),
    });
    $("prompt").value = "";
    showPrompts(answer.labels);
    setStatus(`Prompt added: class ${answer.classes - 1} (${text}).`);
    if (state.file) explainAll();
  } catch (error) {
    setStatus(`Cannot add the prompt: ${error.message}`, true);
  }
}

function chosenMethods() {
  return [...document.querySelectorAll("#methods input:checked")].map((box) => box.value);
}

// ------------------------------------------------------------------ uploading and explaining
async function useFile(file) {
  state.file = file;
  state.target = null;
  $("target").value = "";
  const bitmap = await createImageBitmap(file).catch(() => null);
  if (!bitmap) { setStatus(`${file.name}: the browser cannot show this file`, true); }
  else {
    const canvas = el("canvas", { width: bitmap.width, height: bitmap.height });
    const context = canvas.getContext("2d");
    context.drawImage(bitmap, 0, 0);
    state.image = context.getImageData(0, 0, bitmap.width, bitmap.height);
  }
  await explainAll();
}

async function explainAll() {
  if (!state.file) return;
  const round = ++state.request;
  const methods = chosenMethods();
  state.results = {};
  $("panels").replaceChildren();
  if (!methods.length) { setStatus("Pick a method."); return; }
  setStatus(`Explaining with ${methods.join(", ")}…`);
  const layer = $("layer").value;
  const answers = await Promise.allSettled(methods.map((method) => explainOne(method, layer)));
  if (round !== state.request) return;
  const failed = answers.filter((a) => a.status === "rejected");
  answers.forEach((answer, i) => { if (answer.status === "fulfilled") state.results[methods[i]] = answer.value; });
  const first = answers.find((a) => a.status === "fulfilled");
  if (first) showTop(first.value);
  renderAll();
  if (failed.length) setStatus(failed.map((f) => f.reason.message).join("; "), true);
  else setStatus(`Explained class ${first.value.target} (${first.value.target_name}).`);
  document.body.dataset.ready = String(round);
}

async function explainOne(method, layer) {
  const form = new FormData();
  form.append("image", state.file);
  form.append("method", method);
  form.append("layer", layer);
  form.append("target", state.target === null ? "pred" : String(state.target));
  const answer = await api("explain", { method: "POST", body: form });
  answer.values = await decodeMap(answer.map, answer.width, answer.height);
  return answer;
}

async function decodeMap(base64, width, height) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
  const canvas = el("canvas", { width, height });
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, width, height).data;
  const values = new Uint8Array(width * height);
  for (let i = 0; i < values.length; i++) values[i] = rgba[4 * i];
  return values;
}

function bar(fraction) {
  const span = el("span", { class: "bar" });
  span.style.width = `${(100 * fraction).toFixed(1)}%`;  // CSSOM: allowed by the page's CSP
  return span;
}

function showTop(answer) {
  const list = $("top");
  list.replaceChildren();
  for (const entry of answer.top) {
    const chosen = entry.class === answer.target;
    const button = el("button", {
      type: "button", class: chosen ? "chosen" : "", dataset: { class: String(entry.class) },
      onclick: () => { state.target = entry.class; $("target").value = entry.class; explainAll(); },
    }, `${entry.name} — ${(100 * entry.probability).toFixed(1)}%`,
    bar(entry.probability));
    list.append(el("li", {}, button));
  }
}

// ------------------------------------------------------------------ rendering in the browser
function renderAll() {
  const panels = $("panels");
  panels.replaceChildren();
  for (const [method, answer] of Object.entries(state.results)) panels.append(panel(method, answer));
}

function panel(method, answer) {
  const canvas = el("canvas", { dataset: { method, target: String(answer.target) } });
  drawOverlay(canvas, answer);
  const stem = (state.file.name.replace(/\.[^.]*$/, "") || "image") + `_${method}_${answer.target}`;
  const png = el("a", { href: "#", download: stem + ".png", text: "overlay PNG" });
  png.addEventListener("click", (event) => { png.href = canvas.toDataURL("image/png"); });
  const npy = el("a", { href: "#", download: stem + ".npy", text: "map .npy" });
  npy.addEventListener("click", () => {
    if (npy.href.startsWith("blob:")) URL.revokeObjectURL(npy.href);
    npy.href = URL.createObjectURL(npyBlob(answer.values, answer.height, answer.width));
  });
  const value = answer.probability === null  // an output value (output:K): its score
    ? `score=${answer.score.toFixed(3)}` : `p=${answer.probability.toFixed(3)}`;
  const caption = `${method} · ${answer.layer || "input"} · class ${answer.target} ` +
    `(${answer.target_name}) ${value}`;
  return el("div", { class: "panel" }, canvas, el("div", { class: "caption", text: caption }), png, npy);
}

function mapAt(answer, width, height) {
  // the map (model resolution) stretched over the whole image, bilinear as the library does
  const small = el("canvas", { width: answer.width, height: answer.height });
  const data = new ImageData(answer.width, answer.height);
  answer.values.forEach((v, i) => { data.data.set([v, v, v, 255], 4 * i); });
  small.getContext("2d").putImageData(data, 0, 0);
  const big = el("canvas", { width, height });
  const context = big.getContext("2d");
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.drawImage(small, 0, 0, width, height);
  return context.getImageData(0, 0, width, height).data;
}

function drawOverlay(canvas, answer) {
  const image = state.image;
  const width = image ? image.width : answer.width, height = image ? image.height : answer.height;
  canvas.width = width; canvas.height = height;
  const table = state.model.colormaps[$("colormap").value];
  const alpha = Number($("alpha").value), threshold = Number($("threshold").value);
  const heat = mapAt(answer, width, height);
  const out = new ImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const v = heat[4 * i];
    const a = v / 255 < threshold ? 0 : alpha;
    const color = table[v];
    for (let c = 0; c < 3; c++) {
      const base = image ? image.data[4 * i + c] : 0;
      out.data[4 * i + c] = Math.round((1 - a) * base + a * color[c]);
    }
    out.data[4 * i + 3] = 255;
  }
  const context = canvas.getContext("2d");
  context.putImageData(out, 0, 0);
  if ($("boxes").checked) {
    const box = largestBox(answer.values, answer.width, answer.height, 0.2);
    if (box) {
      const sx = width / answer.width, sy = height / answer.height;
      context.strokeStyle = "#00e676";
      context.lineWidth = Math.max(2, Math.round(width / 150));
      context.strokeRect(box[0] * sx, box[1] * sy, (box[2] - box[0] + 1) * sx, (box[3] - box[1] + 1) * sy);
    }
  }
}

function largestBox(values, width, height, fraction) {
  // camlens.boxes: the largest 8-connected region at or above fraction x the map's maximum
  let peak = 0;
  for (const v of values) peak = Math.max(peak, v);
  if (peak <= 0) return null;
  const on = (i) => values[i] >= fraction * peak;
  const seen = new Uint8Array(values.length);
  let best = null, bestArea = 0;
  for (let start = 0; start < values.length; start++) {
    if (seen[start] || !on(start)) continue;
    const stack = [start]; seen[start] = 1;
    let area = 0, x0 = width, y0 = height, x1 = -1, y1 = -1;
    while (stack.length) {
      const i = stack.pop(), x = i % width, y = (i - x) / width;
      area++; x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
        const nx = x + dx, ny = y + dy, j = ny * width + nx;
        if (nx >= 0 && ny >= 0 && nx < width && ny < height && !seen[j] && on(j)) { seen[j] = 1; stack.push(j); }
      }
    }
    if (area > bestArea) { bestArea = area; best = [x0, y0, x1, y1]; }
  }
  return best;
}

function npyBlob(values, height, width) {
  // NumPy .npy v1.0: float32 (height, width), value / 255 (the map within 8-bit rounding)
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${height}, ${width}), }`;
  while ((10 + header.length + 1) % 64) header += " ";
  header += "\n";
  const head = new Uint8Array(10 + header.length);
  head.set([0x93, 78, 85, 77, 80, 89, 1, 0, header.length & 255, header.length >> 8]);
  for (let i = 0; i < header.length; i++) head[10 + i] = header.charCodeAt(i);
  const body = new Float32Array(values.length);
  values.forEach((v, i) => { body[i] = v / 255; });
  return new Blob([head, body.buffer], { type: "application/octet-stream" });
}

// ------------------------------------------------------------------ wiring
function wire() {
  $("file").addEventListener("change", (event) => { if (event.target.files[0]) useFile(event.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault(); drop.classList.remove("over");
    if (event.dataTransfer.files[0]) useFile(event.dataTransfer.files[0]);
  });
  $("layer").addEventListener("change", explainAll);
  $("prompt-form").addEventListener("submit", addPrompt);
  $("target").addEventListener("change", () => {
    const text = $("target").value.trim();
    state.target = text === "" ? null : Number(text);
    explainAll();
  });
  for (const id of ["colormap", "alpha", "threshold", "boxes"]) {
    $(id).addEventListener("input", () => {
      for (const id2 of ["alpha", "threshold"]) $(id2 + "-value").textContent = Number($(id2).value).toFixed(2);
      renderAll();
    });
  }
  $("tab-explain").addEventListener("click", () => showView("explain"));
  $("tab-runs").addEventListener("click", () => showView("runs"));
}

function showView(name) {
  for (const view of ["explain", "runs"]) {
    $("view-" + view).hidden = view !== name;
    $("tab-" + view).classList.toggle("active", view === name);
  }
  if (name === "runs" && window.camlensRuns) window.camlensRuns.open();
}

window.camlens = { api, el, state, useFile, showView, setStatus };
wire();
// after every deferred script (runs.js too) has run
document.addEventListener("DOMContentLoaded", () => {
  loadModel().then(async () => {
    if (window.camlensRuns) await window.camlensRuns.init();
    document.body.dataset.model = "loaded";
  }).catch((error) => setStatus(`Cannot load the model description: ${error.message}`, true));
});
