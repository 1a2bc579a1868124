// optimlab web lab: your own landscape, typed as a formula in x and y. The server parses it with
// its own small grammar (never eval), checks it is finite over the window, finds its minima and
// the catalogue's default learning rates for it (POST /api/formula); the page then draws and runs
// it as the landscape "custom" (the URL hash carries landscape=custom&formula=...&window=...).
"use strict";

(() => {
  const lab = window.optimlabLab;
  const $ = (id) => document.getElementById(id);
  const DEFAULT_FORMULA = "x^2 + 10 y^2 + 2 sin(2x)";
  const DEFAULT_WINDOW = [[-3, 3], [-3, 3]];
  let cache = { key: "", info: null };   // the last formula answered: the submit and the grid share it
  let loadedKey = "";                    // the formula and window the page last switched to

  const keyOf = (formula, window) => JSON.stringify([formula, window]);

  async function fetchFormula(formula, window, resolution) {
    const key = keyOf(formula, window);
    if (cache.key === key && cache.info && cache.info.grid.resolution === resolution) return cache.info;
    const info = await lab.api("/api/formula", { formula, window, resolution });
    cache = { key, info };
    return info;
  }

  // the formula landscape's facts go where the page looks for a landscape's (meta.landscapes)
  function remember(land) {
    const list = lab.meta.landscapes;
    const i = list.findIndex((l) => l.name === "custom");
    if (i >= 0) list[i] = land; else list.push(land);
  }

  const inside = (p, [[x0, x1], [y0, y1]]) => p[0] >= x0 && p[0] <= x1 && p[1] >= y0 && p[1] <= y1;

  // app.js's loadLandscape asks here for the grid of landscape "custom"
  lab.customGrid = async (st, resolution) => {
    if (!st.formula) st.formula = $("formula").value.trim() || DEFAULT_FORMULA;
    if (!st.window) st.window = readWindow() || DEFAULT_WINDOW;
    const info = await fetchFormula(st.formula, st.window, resolution);
    remember(info.landscape);
    const key = keyOf(st.formula, st.window);
    if (key !== loadedKey) {
      // a new formula: its default lrs (for lrs the user did not set) and, where the starts left
      // the window or the landscape changed, its default start
      const switched = lab.grid && lab.grid.name !== "custom";   // lab.grid is still the previous landscape's
      if (loadedKey || switched || !st.starts.length || !st.starts.every((p) => inside(p, info.landscape.window))) {
        st.starts = [info.landscape.start.slice()];
      }
      loadedKey = key;
      lab.resetLrs();
      lab.renderControls();
    }
    return info.grid;
  };

  function readWindow() {
    const v = ["fx0", "fx1", "fy0", "fy1"].map((id) => Number($(id).value));
    if (v.some((x) => !Number.isFinite(x)) || ["fx0", "fx1", "fy0", "fy1"].some((id) => $(id).value.trim() === "")) return null;
    return [[v[0], v[1]], [v[2], v[3]]];
  }

  function showFormulaError(msg) {
    const box = $("formula-error");
    box.hidden = !msg;
    box.textContent = msg || "";
  }

  function fillForm() {
    const st = lab.state;
    if (!st) return;
    if (st.landscape === "custom" && st.formula) $("formula").value = st.formula;
    const w = st.landscape === "custom" && st.window ? st.window : null;
    if (w) [["fx0", w[0][0]], ["fx1", w[0][1]], ["fy0", w[1][0]], ["fy1", w[1][1]]].forEach(([id, v]) => { $(id).value = v; });
    $("formula-box").open = st.landscape === "custom" || $("formula-box").open;
  }

  async function submit(ev) {
    ev.preventDefault();
    const formula = $("formula").value.trim();
    const window = readWindow();
    if (!window) { showFormulaError("the window needs four numbers: x min, x max, y min, y max"); return; }
    const before = { landscape: lab.state.landscape, formula: lab.state.formula, window: lab.state.window };
    try {
      await fetchFormula(formula, window, 121);   // refused formulas stop here: nothing runs
    } catch (e) {
      showFormulaError(e.message);
      lab.fail(e.message);
      document.body.dataset.formula = "refused";
      return;
    }
    showFormulaError(null);
    Object.assign(lab.state, { landscape: "custom", formula, window });
    if (!(await lab.loadLandscape())) { Object.assign(lab.state, before); return; }
    document.body.dataset.formula = "accepted";
    lab.changed({ animate: true });
  }

  function init() {
    if (!lab.meta) { setTimeout(init, 50); return; }   // app.js's init has not answered yet
    $("formula").value = DEFAULT_FORMULA;
    [["fx0", -3], ["fx1", 3], ["fy0", -3], ["fy1", 3]].forEach(([id, v]) => { $(id).value = v; });
    fillForm();
    $("formula-form").addEventListener("submit", submit);
    $("landscape").addEventListener("change", () => { if ($("landscape").value === "custom") $("formula-box").open = true; });
    window.addEventListener("hashchange", () => setTimeout(fillForm, 0));
  }

  document.addEventListener("DOMContentLoaded", () => setTimeout(init, 0));
})();
