// optimlab web lab: the (lr, beta) stability / speed map (in the spirit of Distill's "Why Momentum
// Really Works"). POST /api/stability runs one trajectory per cell as ONE batched engine run on
// the server; the page draws steps to tolerance as a heat map (grey: not reached, red: diverged),
// and a click on a cell sets that card's lr and beta to the cell's and runs it.
"use strict";

(() => {
  const lab = window.optimlabLab;
  const $ = (id) => document.getElementById(id);
  const BETA_KNOBS = ["momentum", "beta1"];
  const KNOB_LABEL = { momentum: "β (momentum)", beta1: "β₁" };
  const NOT_REACHED = "#c8c8c8";
  const DIVERGED = "#c0392b";
  const st = (lab.stability = { map: null, card: null, cell: null });

  const betaKnob = (entry) => BETA_KNOBS.find((k) => entry.knobs && k in entry.knobs);
  // what a map depends on besides the card: a cell equals a run only while these are the same
  const settings = (s) => JSON.stringify([s.landscape, lab.landscapeFields(s), s.starts[0], s.steps, s.schedule]);

  // the cards that have a beta, as choices of the map
  function refreshChoices() {
    if (!lab.state || !lab.meta) return;
    const sel = $("stability-opt");
    const keep = sel.value;
    sel.innerHTML = "";
    lab.state.opts.forEach((o, i) => {
      if (!betaKnob(o)) return;
      const m = lab.optMeta(o.name);
      sel.add(new Option(`${m ? m.label : o.name} (card ${i + 1})`, String(i)));
    });
    if ([...sel.options].some((op) => op.value === keep)) sel.value = keep;
    $("stability-run").disabled = sel.options.length === 0;
    if (!sel.options.length) note("No card has a momentum or β₁: add Momentum, NAG or Adam to map one.");
  }

  function note(text) { $("stability-note").textContent = text; }

  async function compute() {
    const i = Number($("stability-opt").value);
    const entry = lab.state.opts[i];
    if (!entry || !betaKnob(entry)) return;
    const size = Number($("stability-size").value);
    const s = lab.state;
    const body = {
      landscape: s.landscape, ...lab.landscapeFields(s), start: s.starts[0], steps: s.steps, schedule: s.schedule,
      optimizer: { name: entry.name, lr: entry.lr, ...entry.knobs }, n_lr: size, n_beta: size,
    };
    document.body.dataset.stability = "computing";
    note(`computing ${size * size} runs of ${s.steps} steps…`);
    try {
      const map = await lab.api("/api/stability", body);
      st.map = map;
      st.settings = settings(s);
      st.card = i;
      st.cell = null;
      draw();
      note(`${map.label} on ${map.landscape} from (${map.start.map((v) => lab.fmt(v, 4)).join(", ")}), ` +
           `${map.steps} steps, tol ${lab.fmt(map.tol)}: ${map.lrs.length} × ${map.betas.length} runs computed in ` +
           `${lab.fmt(map.elapsed_s, 2)} s as one batched engine run. Click a cell to run it.`);
      document.body.dataset.stability = "ready";
    } catch (e) {
      note(`the map could not be computed: ${e.message}`);
      document.body.dataset.stability = "error";
    }
  }

  function decades(lo, hi) {
    const out = [];
    for (let k = Math.ceil(lo - 1e-9); k <= Math.floor(hi + 1e-9); k++) out.push(k);
    return out;
  }

  function draw() {
    const m = st.map;
    const box = $("stability");
    box.hidden = false;
    const x = m.lrs.map(Math.log10);
    const status = m.steps_to_tol.map((row, i) => row.map((v, j) => (m.diverged[i][j] ? 1 : v < 0 ? 0 : null)));
    const steps = m.steps_to_tol.map((row, i) => row.map((v, j) => (m.diverged[i][j] || v < 0 ? null : v)));
    const text = m.steps_to_tol.map((row, i) => row.map((v, j) => (
      m.diverged[i][j] ? "diverged" : v < 0 ? `not within tol in ${m.steps} steps` : `${v} steps to tol`)));
    const custom = m.betas.map(() => m.lrs);
    const hover = `lr %{customdata:.3g}, ${m.knob} %{y:.4g}: %{text}<extra></extra>`;
    const ticks = decades(x[0], x[x.length - 1]);
    const traces = [
      { type: "heatmap", x, y: m.betas, z: steps, text, customdata: custom, hovertemplate: hover,
        colorscale: "Viridis", reversescale: true, zmin: 0, zmax: m.steps, xgap: 0, ygap: 0,
        colorbar: { title: { text: "steps to tol", side: "right" }, thickness: 12, len: 1 } },
      { type: "heatmap", x, y: m.betas, z: status, text, customdata: custom, hovertemplate: hover,
        colorscale: [[0, NOT_REACHED], [0.5, NOT_REACHED], [0.5, DIVERGED], [1, DIVERGED]], zmin: 0, zmax: 1,
        showscale: false },
      { type: "scatter", mode: "markers", x: [], y: [], hoverinfo: "skip", showlegend: false,
        marker: { symbol: "square-open", size: 14, color: "#ffffff", line: { width: 3, color: "#000" } } },
    ];
    const layout = {
      margin: { l: 60, r: 90, t: 10, b: 48 },
      xaxis: { title: { text: "learning rate (log scale)" }, tickvals: ticks, ticktext: ticks.map((k) => `1e${k}`),
               range: [x[0] - (x[1] - x[0]) / 2, x[x.length - 1] + (x[1] - x[0]) / 2], fixedrange: true },
      yaxis: { title: { text: KNOB_LABEL[m.knob] || m.knob }, fixedrange: true },
      font: { family: "DejaVu Sans, Arial, sans-serif", size: 13 },
    };
    Plotly.react(box, traces, layout, { displayModeBar: false, responsive: true });
    if (!box.dataset.bound) {
      box.dataset.bound = "1";
      box.on("plotly_click", (ev) => {
        const pt = ev.points && ev.points[0];
        if (!pt || !Array.isArray(pt.pointNumber)) return;
        runCell(pt.pointNumber[0], pt.pointNumber[1]);
      });
    }
  }

  // a click: that card's lr and beta become the cell's, and the page runs it
  function runCell(i, j) {
    const m = st.map;
    const entry = lab.state.opts[st.card];
    if (!entry || entry.name !== m.optimizer) {
      note(`card ${st.card + 1} is no longer ${m.label}: compute the map again`);
      return;
    }
    if (settings(lab.state) !== st.settings) {
      note("the landscape, first start, steps or schedule changed since this map was computed: compute it again");
      return;
    }
    entry.lr = m.lrs[j];
    entry.userLr = true;
    entry.knobs[m.knob] = m.betas[i];
    st.cell = [i, j];
    Plotly.restyle($("stability"), { x: [[Math.log10(m.lrs[j])]], y: [[m.betas[i]]] }, [2]);
    const v = m.steps_to_tol[i][j];
    const what = m.diverged[i][j] ? "diverged" : v < 0 ? `not within tol in ${m.steps} steps` : `${v} steps to tol`;
    note(`running card ${st.card + 1} (${m.label}) at lr = ${m.lrs[j]}, ${m.knob} = ${m.betas[i]}: the map says ${what}`);
    document.body.dataset.stabilityCell = `${i},${j}`;
    lab.renderCards();
    lab.changed({ animate: true });
  }
  st.runCell = runCell;

  function init() {
    if (!lab.meta || !lab.state) { setTimeout(init, 50); return; }
    refreshChoices();
    new MutationObserver(refreshChoices).observe($("optimizers"), { childList: true });
    $("stability-run").addEventListener("click", compute);
    $("stability-box").addEventListener("toggle", () => {
      refreshChoices();
      if ($("stability-box").open && st.map) Plotly.Plots.resize($("stability"));
    });
  }

  document.addEventListener("DOMContentLoaded", () => setTimeout(init, 0));
})();
