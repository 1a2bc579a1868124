// optimlab web lab: step-through mode. With it on, the page asks the server for each step's
// gradient and optimizer state (POST /api/run with "state": true: the engine's own state,
// computed by the fast path bit for bit, see optimlab/web/compute.py), and at the current point w_t it shows, for the step t -> t+1 of each
// optimizer: the gradient, the velocity / first moment, the squared-gradient accumulator (as its
// square root) and the resulting per-axis step, as arrows on the contour and bars in a panel.
// Step with the buttons or the keys ← and → (also , and .).
"use strict";

(() => {
  const lab = window.optimlabLab;
  const $ = (id) => document.getElementById(id);
  const step = { on: false };
  lab.stepper = step;

  // what the panel shows, in order: [key, label, what]
  const ROWS = [
    ["grad", "gradient g", "the gradient the rule was given (NAG: at the look-ahead point w − μv)"],
    ["velocity", "velocity / 1st moment", "the rule's velocity (momentum) or first moment after the step"],
    ["accumulator", "√ accumulator", "square root of the squared-gradient accumulator after the step"],
    ["step", "step Δw", "the step taken: w(t+1) − w(t)"],
    ["ratio", "Δw / (−g)", "the effective learning rate per axis"],
  ];

  function build() {
    lab.insert("div", { class: "stepper-controls" },
      '<label class="inline"><input id="stepper-on" type="checkbox"> step through</label>' +
      '<button id="step-back" type="button" aria-label="step back" title="step back (←)" disabled>◀ step</button>' +
      '<button id="step-forward" type="button" aria-label="step forward" title="step forward (→)" disabled>step ▶</button>',
      document.querySelector(".player"), true);
    const panel = lab.insert("section", { id: "stepper-panel", hidden: true, "aria-label": "optimizer state at the current step" },
      '<h2>At this step <span id="stepper-note" class="note"></span></h2><div id="stepper-bars"></div>', $("contour"), true);
    $("stepper-on").addEventListener("change", () => {
      step.on = $("stepper-on").checked;
      step.jump = step.on;   // the first answer with the state starts at step 0
      panel.hidden = !step.on;
      if (!step.on) { clearArrows(); updateButtons(); }
      lab.changed({ animate: false });
    });
    $("step-back").addEventListener("click", () => move(-1));
    $("step-forward").addEventListener("click", () => move(1));
    document.addEventListener("keydown", (ev) => {
      if (!step.on || ev.altKey || ev.ctrlKey || ev.metaKey) return;
      const tag = (ev.target && ev.target.tagName) || "";
      if (["INPUT", "SELECT", "TEXTAREA"].includes(tag) && ev.target.type !== "checkbox") return;
      const d = { ArrowLeft: -1, ArrowRight: 1, ",": -1, ".": 1 }[ev.key];
      if (!d) return;
      ev.preventDefault();
      move(d);
    });
  }

  const hasState = () => !!(lab.result && lab.result.runs.length && lab.result.runs[0].state);

  function move(d) {
    if (!hasState()) return;
    lab.stopAnimation();
    lab.drawFrame(lab.t + d);
  }

  function updateButtons() {
    const ok = step.on && hasState();
    $("step-back").disabled = !ok || lab.t <= 0;
    $("step-forward").disabled = !ok || lab.t >= lab.result.steps;
  }

  lab.hooks.body.push((body, st) => {
    if (step.on && Number(st.steps) <= lab.meta.limits.max_state_steps) body.state = true;
  });

  lab.hooks.result.push((result) => {
    if (!step.on) return;
    const note = $("stepper-note");
    if (!hasState()) {
      note.textContent = `(step-through needs at most ${lab.meta.limits.max_state_steps} steps)`;
      $("stepper-bars").innerHTML = "";
      return;
    }
    note.textContent = "";
  });

  // the quantities of step k (1..steps) of entry i, start s
  function quantities(run, k, s) {
    const st = run.state;
    const pick = (role) => Object.entries(st.roles).find(([, r]) => r === role);
    const at = (arr) => (arr ? arr[k - 1][s] : null);
    const vel = pick("velocity");
    const acc = pick("accumulator");
    const g = at(st.grad);
    // the step taken: the path's difference (the same IEEE subtraction the server would do)
    const [a, b] = [run.path[k - 1][s], run.path[k][s]];
    const d = a && b && a.every((v) => v !== null) && b.every((v) => v !== null) ? [b[0] - a[0], b[1] - a[1]] : null;
    const sq = (v) => (v === null ? null : Math.sqrt(v));
    return {
      grad: g,
      velocity: vel ? at(st.values[vel[0]]) : null,
      velocityName: vel ? vel[0] : null,
      accumulator: acc ? at(st.values[acc[0]]).map(sq) : null,
      accumulatorName: acc ? acc[0] : null,
      step: d,
      ratio: g && d ? d.map((v, j) => (g[j] ? -v / g[j] : null)) : null,
    };
  }

  function clearArrows() {
    const fg = $("contour-fg");
    if (fg && fg.layout && (fg.layout.annotations || []).length) Plotly.relayout(fg, { annotations: [] });
  }

  function arrows(t) {
    const result = lab.result;
    const land = lab.landMeta(result.landscape);
    const [[x0, x1], [y0, y1]] = land.window;
    const L = 0.09 * Math.hypot(x1 - x0, y1 - y0);
    const k = Math.min(t + 1, result.steps);
    const out = [];
    const arrow = (from, to, colour, text, width, head) => out.push({
      x: to[0], y: to[1], ax: from[0], ay: from[1], xref: "x", yref: "y", axref: "x", ayref: "y",
      showarrow: true, arrowhead: head, arrowsize: 1, arrowwidth: width, arrowcolor: colour,
      text, font: { size: 11, color: colour }, standoff: 0, startstandoff: 0,
      xanchor: "left", yanchor: "bottom",
    });
    const unit = (v, sign) => {
      if (!v || v.some((c) => c === null || !Number.isFinite(c))) return null;
      const n = Math.hypot(v[0], v[1]);
      return n > 0 ? [(sign * v[0] / n) * L, (sign * v[1] / n) * L] : null;
    };
    result.runs.forEach((run, i) => {
      if (!run.state) return;
      const q = quantities(run, k, 0);
      const w = run.path[k - 1][0];
      if (!w || w.some((c) => c === null || !Number.isFinite(c))) return;
      const c = run.colour || lab.colour(i);
      // NAG's gradient is taken at the look-ahead point w - momentum * v (its velocity before the step)
      const o = lab.optMeta(run.name);
      let from = w;
      if (o && o.rule && o.rule.lookahead && q.velocityName && k > 1) {
        const v0 = run.state.values[q.velocityName][k - 2][0];
        const mu = run.hyper.momentum;
        if (v0 && Number.isFinite(mu)) from = [w[0] - mu * v0[0], w[1] - mu * v0[1]];
      }
      const g = unit(q.grad, -1);
      if (g) arrow(from, [from[0] + g[0], from[1] + g[1]], "#222222", i === 0 ? "−g" : "", 1.5, 2);
      const v = unit(q.velocity, -1);
      if (v) arrow(w, [w[0] + v[0], w[1] + v[1]], c, "−v", 1.5, 3);
      const p = run.path[k][0];
      if (p && p.every((cv) => cv !== null && Number.isFinite(cv))) arrow(w, p, c, "", 3.5, 2);
    });
    return out;
  }

  function bars(t) {
    const result = lab.result;
    const k = Math.min(t + 1, result.steps);
    const box = $("stepper-bars");
    box.innerHTML = "";
    $("stepper-note").textContent =
      `(step ${k} of ${result.steps}: from w${sub(k - 1)} to w${sub(k)}` +
      `${result.starts.length > 1 ? "; first start" : ""}; arrows: black −g and −v directions, thick = the step)`;
    result.runs.forEach((run, i) => {
      if (!run.state) return;
      const q = quantities(run, k, 0);
      const card = document.createElement("div");
      card.className = "step-card";
      card.dataset.entry = i;
      card.style.setProperty("--swatch", run.colour || lab.colour(i));
      const title = document.createElement("h3");
      title.textContent = run.label;
      card.appendChild(title);
      const table = document.createElement("table");
      table.innerHTML = "<thead><tr><th></th><th>x</th><th>y</th></tr></thead>";
      const tb = document.createElement("tbody");
      for (const [key, label, help] of ROWS) {
        const v = q[key];
        if (!v) continue;
        const tr = tb.insertRow();
        tr.dataset.quantity = key;
        const th = document.createElement("th");
        th.textContent = key === "velocity" ? `${label} (${q.velocityName})`
          : key === "accumulator" ? `${label} (${q.accumulatorName})` : label;
        th.title = help;
        tr.appendChild(th);
        const scale = Math.max(...v.map((c) => (c === null || !Number.isFinite(c) ? 0 : Math.abs(c))));
        v.forEach((c, axis) => {
          const td = tr.insertCell();
          td.dataset.axis = axis;
          td.dataset.value = c === null ? "" : String(c);
          const barEl = document.createElement("span");
          barEl.className = `bar ${c < 0 ? "neg" : "pos"}`;
          barEl.style.width = `${scale > 0 && c !== null && Number.isFinite(c) ? (100 * Math.abs(c)) / scale : 0}%`;
          const text = document.createElement("span");
          text.className = "val";
          text.textContent = lab.fmt(c, 4);
          td.append(barEl, text);
        });
      }
      table.appendChild(tb);
      card.appendChild(table);
      box.appendChild(card);
    });
  }

  const SUBS = "₀₁₂₃₄₅₆₇₈₉";
  const sub = (n) => String(n).split("").map((d) => SUBS[Number(d)]).join("");

  lab.hooks.frame.push((t) => {
    updateButtons();
    if (!step.on || !hasState()) return;
    if (step.jump && t !== 0) { step.jump = false; lab.stopAnimation(); lab.drawFrame(0); return; }
    step.jump = false;
    bars(t);
    Plotly.relayout($("contour-fg"), { annotations: arrows(t) });
  });

  document.addEventListener("DOMContentLoaded", build);
})();
