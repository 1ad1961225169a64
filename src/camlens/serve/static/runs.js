// camlens serve, the run view: a run folder's summary, a filtered, sorted, paged grid of its rows,
// and one image's methods side by side, re-explained on demand. A client of /api/runs only.
"use strict";

(() => {
  const { api, el } = window.camlens;
  const $ = (id) => document.getElementById(id);
  const view = { runs: [], run: null, summary: null, offset: 0, limit: 48, urls: [] };

  async function imageUrl(path) {
    const parts = path.split("/").map(encodeURIComponent).join("/");
    const blob = await api(`runs/${view.run}/files/${parts}`);
    const url = URL.createObjectURL(blob);
    view.urls.push(url);
    return url;
  }

  function freeImages() {
    for (const url of view.urls) URL.revokeObjectURL(url);
    view.urls = [];
  }

  async function init() {
    view.runs = await api("runs");
    if (!view.runs.length) return;
    $("tab-runs").hidden = false;
    const choose = el("select", { id: "run-choice", onchange: () => openRun(Number(choose.value)) });
    for (const run of view.runs) choose.append(el("option", { value: String(run.id), text: `${run.name} (${run.rows} rows)` }));
    $("run-bar").replaceChildren(el("label", {}, "Run ", choose));
    if (location.hash.includes("runs")) window.camlens.showView("runs");
  }

  async function open() {
    if (view.run === null && view.runs.length) await openRun(view.runs[0].id);
  }

  function select(id, options, onchange) {
    const node = el("select", { id, onchange });
    for (const [value, text] of options) node.append(el("option", { value, text }));
    return node;
  }

  async function openRun(id) {
    view.run = id;
    view.offset = 0;
    const summary = await api(`runs/${id}`);
    view.summary = summary;
    const info = summary.info;
    const accuracy = summary.accuracy === null ? "" : ` · accuracy ${(100 * summary.accuracy).toFixed(1)}%`;
    $("run-summary").textContent =
      `${info.model} · ${summary.images} images · ${summary.rows} rows · methods ${Object.keys(summary.methods).join(", ")}` +
      `${accuracy} · ${summary.failures.length} failed · ${info.finished ? "finished " + info.finished : "not finished"}`;
    const labels = info.labels || [];
    const reload = () => { view.offset = 0; page(); };
    const classes = [["", "any"], ...summary.predicted.map((c) => [String(c.class), `${c.name ?? c.class} (${c.rows})`])];
    const truths = [["", "any"], ...labels.map((name, i) => [String(i), name])];
    $("run-filters").replaceChildren(
      el("label", {}, "Method ", select("f-method", [["", "all"], ...Object.keys(summary.methods).map((m) => [m, m])], reload)),
      el("label", {}, "Predicted ", select("f-predicted", classes, reload)),
      el("label", {}, "True ", select("f-true", truths, reload)),
      el("label", {}, el("input", { type: "checkbox", id: "f-mistakes", onchange: reload }), " mistakes only"),
      el("label", {}, "Confidence ", el("input", { type: "number", id: "f-min", min: "0", max: "1", step: "0.05", value: "0", onchange: reload }),
        " to ", el("input", { type: "number", id: "f-max", min: "0", max: "1", step: "0.05", value: "1", onchange: reload })),
      el("label", {}, "Sort ", select("f-sort", [["row", "run order"], ["probability", "confidence"], ["predicted", "predicted class"], ["true", "true class"], ["stem", "name"]], reload)),
      el("label", {}, el("input", { type: "checkbox", id: "f-desc", onchange: reload }), " descending"),
    );
    await page();
  }

  function query() {
    const params = new URLSearchParams({ offset: String(view.offset), limit: String(view.limit) });
    const pairs = { method: "f-method", predicted: "f-predicted", true: "f-true", sort: "f-sort" };
    for (const [key, id] of Object.entries(pairs)) if ($(id).value) params.set(key, $(id).value);
    if ($("f-mistakes").checked) params.set("mistakes", "true");
    if ($("f-desc").checked) params.set("descending", "true");
    if (Number($("f-min").value) > 0) params.set("min_probability", $("f-min").value);
    if (Number($("f-max").value) < 1) params.set("max_probability", $("f-max").value);
    return params;
  }

  let pages = 0;  // page requests made: an answer to one that a newer one superseded is dropped

  async function page() {
    const mine = ++pages;
    const answer = await api(`runs/${view.run}/rows?${query()}`);
    if (mine !== pages) return;  // filters changed while it was on its way
    freeImages();
    const grid = $("grid");
    grid.replaceChildren();
    for (const row of answer.rows) {
      const picture = el("img", { alt: row.stem });
      imageUrl(row.overlay).then((url) => { picture.src = url; }).catch(() => {});
      const truth = row.true_name === null ? "" : ` · true ${row.true_name}`;
      const tile = el("div", { class: row.correct === false ? "tile wrong" : "tile", dataset: { row: String(row.row) }, onclick: () => detail(row) },
        picture, el("div", { text: `${row.stem} · ${row.method}` }),
        el("div", { text: row.probability === null  // a regression row: its output value's score
          ? `output ${row.target}: ${(row.score ?? 0).toFixed(3)}${truth}`
          : `${row.predicted_name ?? row.predicted} ${(100 * row.probability).toFixed(1)}%${truth}` }));
      grid.append(tile);
    }
    const last = Math.min(answer.offset + answer.rows.length, answer.total);
    const previous = el("button", { type: "button", text: "‹ previous", onclick: () => { view.offset = Math.max(0, view.offset - view.limit); page(); } });
    const next = el("button", { type: "button", text: "next ›", onclick: () => { view.offset += view.limit; page(); } });
    previous.disabled = view.offset === 0;
    next.disabled = last >= answer.total;
    $("pager").replaceChildren(previous, el("span", { id: "page-info", text: `${answer.total ? answer.offset + 1 : 0}–${last} of ${answer.total}` }), next);
    document.body.dataset.grid = `${view.run}:${answer.offset}:${answer.total}`;
  }

  async function detail(row) {
    const params = new URLSearchParams({ path: row.path, limit: "50" });
    const answer = await api(`runs/${view.run}/rows?${params}`);
    const panels = el("div", { id: "run-detail", class: "detail" });
    for (const other of answer.rows) {
      const picture = el("img", { alt: `${other.stem} ${other.method}` });
      picture.src = await imageUrl(other.overlay);
      panels.append(el("div", { class: "panel" }, picture,
        el("div", { class: "caption", text: `${other.method} · ${other.layer} · class ${other.target} (${other.target_name ?? other.target}) p=${(other.target_probability ?? 0).toFixed(3)}` })));
    }
    const again = el("button", { type: "button", id: "re-explain", text: "Re-explain in the Explain view", onclick: async () => {
      const blob = await api(`runs/${view.run}/rows/${row.row}/image`);
      window.camlens.showView("explain");
      await window.camlens.useFile(new File([blob], `${row.stem}.png`, { type: "image/png" }));
    } });
    const close = el("button", { type: "button", text: "close", onclick: () => panels.remove() });
    panels.prepend(el("div", { class: "caption", text: row.path }), again, close);
    const old = $("run-detail");
    if (old) old.remove();
    $("grid").before(panels);
    document.body.dataset.detail = String(row.row);
  }

  window.camlensRuns = { init, open };
})();
