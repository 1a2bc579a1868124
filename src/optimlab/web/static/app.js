// optimlab web lab: the page. All numbers come from the server (POST /api/run runs optimlab's
// batched engine); this script only holds the page state (mirrored in the URL hash), draws with
// plotly.js and animates the trajectories step by step.
"use strict";

(() => {
  // one colour per optimizer, the catalogue's (the same in the figures and GIFs); a second card of
  // the same optimizer is drawn dashed, a third dotted
  const DASHES = ["solid", "dash", "dot"];
  const KNOB_LABEL = { lr: "lr", momentum: "momentum", alpha: "α (decay)", beta1: "β₁", beta2: "β₂", eps: "ε" };
  const DECAY = new Set(["momentum", "alpha", "beta1", "beta2"]);
  const ANIM_SECONDS = 3;          // one run plays in about this long at 1x
  const GRID_RESOLUTION = 121;
  const SPEEDS = [0, 0.5, 1, 2, 5];  // 0: no animation, draw the whole run at once
  const BASE_TRACES = 3;           // in the contour view's foreground: minima, saddles, starts

  const $ = (id) => document.getElementById(id);
  const lab = (window.optimlabLab = {
    meta: null, grid: null, result: null, state: null, t: 0, runId: 0, error: null,
  });
  // hooks for the page's other scripts (rules.js, stepper.js, presets.js): each is a list of
  // functions called at that point; lab.* below exposes what they may call
  const hooks = (lab.hooks = { card: [], body: [], toHash: [], fromHash: [], controls: [], result: [], frame: [] });
  const fire = (name, ...args) => hooks[name].forEach((f) => f(...args));

  const colour = (i) => {
    const o = lab.state && lab.state.opts[i] && optMeta(lab.state.opts[i].name);
    return o ? o.colour : "#555555";
  };
  // the n-th card of the same optimizer: solid, dashed, dotted
  const dash = (i) => {
    const name = lab.state && lab.state.opts[i] ? lab.state.opts[i].name : "";
    const same = lab.state ? lab.state.opts.slice(0, i).filter((o) => o.name === name).length : 0;
    return DASHES[same % DASHES.length];
  };

  // ---------------------------------------------------------------- number helpers
  function fmt(v, digits = 4) {
    if (v === null || v === undefined || typeof v !== "number" || !isFinite(v)) return "—";
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential(digits - 2);
    return String(Number(v.toPrecision(digits)));
  }
  const nice = (v, digits) => Number(Number(v).toPrecision(digits));

  // slider position <-> value: lr and eps on a log scale, decay factors on -log10(1 - v)
  const SLIDERS = {
    lr: { min: -5, max: 1, step: 0.001, to: (x) => nice(10 ** x, 4), from: (v) => Math.log10(v) },
    eps: { min: -12, max: 0, step: 0.1, to: (x) => nice(10 ** x, 2), from: (v) => Math.log10(v) },
    decay: { min: 0, max: 4, step: 0.01, to: (x) => nice(1 - 10 ** -x, 4), from: (v) => -Math.log10(1 - v) },
  };
  const sliderFor = (knob) => (knob === "lr" ? SLIDERS.lr : knob === "eps" ? SLIDERS.eps : SLIDERS.decay);

  // ---------------------------------------------------------------- server
  async function api(path, body) {
    const opts = body === undefined ? {} : {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    };
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (e) {
      throw new Error(`cannot reach the optimlab server (${e.message})`);
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) {
      const msg = data && data.error ? data.error : `HTTP ${resp.status}`;
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function showError(msg) {
    const box = $("error");
    lab.error = msg;
    if (!msg) { box.hidden = true; box.textContent = ""; return; }
    box.hidden = false;
    box.textContent = msg;
  }

  const optMeta = (name) => lab.meta.optimizers.find((o) => o.name === name);
  const landMeta = (name) => lab.meta.landscapes.find((l) => l.name === name);
  function defaultLr(name, landscape) {
    const land = landMeta(landscape || (lab.state && lab.state.landscape));
    const o = optMeta(name);
    if (land && land.default_lr && land.default_lr[name] !== undefined) return land.default_lr[name];
    return o ? o.default_lr : 0.01;
  }
  function newEntry(name) {
    const o = optMeta(name);
    return { name, lr: defaultLr(name), knobs: o ? { ...o.knobs } : {}, userLr: false };
  }
  // on a landscape switch every lr the user did not set goes to that landscape's default
  function resetLrs() {
    for (const o of lab.state.opts) if (!o.userLr) o.lr = defaultLr(o.name);
  }

  // ---------------------------------------------------------------- state <-> URL hash
  // #landscape=rosenbrock&start=-1.2,1;0,2&steps=200&schedule=constant&opt=adam:lr=0.01,beta1=0.9&opt=sgd:lr=0.001
  const enc = (s) => encodeURIComponent(s).replace(/%2C/g, ",").replace(/%3A/g, ":").replace(/%3B/g, ";");
  const num = (s) => (s === undefined || s === null || String(s).trim() === "" ? NaN : Number(s));

  function stateToHash(st) {
    const parts = [
      `landscape=${enc(st.landscape)}`,
      `start=${st.starts.map((p) => p.map((v) => String(v)).join(",")).join(";")}`,
      `steps=${st.steps}`,
      `schedule=${enc(st.schedule)}`,
    ];
    // a formula landscape (formula.js) carries its formula and window
    if (st.landscape === "custom" && st.formula) {
      parts.push(`formula=${encodeURIComponent(st.formula)}`);
      if (st.window) parts.push(`window=${st.window.map((w) => w.join(",")).join(";")}`);
    }
    if (st.speed !== 1) parts.push(`speed=${st.speed}`);
    for (const o of st.opts) {
      // an lr the user did not set is the landscape's default: left out, so a link keeps that meaning
      const kv = [...(o.userLr ? [`lr=${o.lr}`] : []), ...Object.entries(o.knobs).map(([k, v]) => `${k}=${v}`)];
      parts.push(`opt=${enc(o.name)}:${kv.join(",")}`);
    }
    fire("toHash", parts, st);
    return parts.join("&");
  }

  function hashToState(hash) {
    const q = new URLSearchParams(hash.replace(/^#/, ""));
    if (![...q.keys()].length) return null;
    const st = defaultState();
    if (q.has("speed")) {
      const v = num(q.get("speed"));
      if (SPEEDS.includes(v)) st.speed = v;
    }
    if (q.has("landscape")) {
      st.landscape = q.get("landscape");
      const land = landMeta(st.landscape);
      if (land) st.starts = [land.start.slice()];
    }
    if (q.has("formula")) st.formula = q.get("formula");
    if (q.has("window")) st.window = parseStarts(q.get("window"));
    if (q.has("start")) st.starts = parseStarts(q.get("start"));
    if (q.has("steps")) st.steps = num(q.get("steps"));
    if (q.has("schedule")) st.schedule = q.get("schedule");
    if (q.has("opt")) {
      st.opts = q.getAll("opt").map((spec) => {
        const [name, rest = ""] = spec.split(":");
        const entry = { name, lr: NaN, knobs: {}, userLr: true };
        const o = optMeta(name);
        if (o) Object.assign(entry.knobs, o.knobs);
        for (const pair of rest.split(",").filter(Boolean)) {
          const [k, v] = pair.split("=");
          if (k === "lr") entry.lr = num(v); else entry.knobs[k] = num(v);
        }
        if (!rest.includes("lr=")) { entry.lr = o ? defaultLr(name, st.landscape) : NaN; entry.userLr = false; }
        return entry;
      });
    }
    fire("fromHash", q, st);
    return st;
  }

  function parseStarts(text) {
    return String(text).split(";").map((s) => s.trim()).filter(Boolean)
      .map((s) => s.split(",").map((v) => num(v)));
  }

  function defaultState() {
    const landscape = "elongated_bowl";
    const entry = (name, knobs) => ({ name, lr: defaultLr(name, landscape), knobs, userLr: false });
    return {
      landscape,
      starts: [[-9, 2]],
      steps: 150,
      schedule: "constant",
      speed: 1,
      opts: [
        entry("sgd", {}), entry("momentum", { momentum: 0.9 }), entry("nag", { momentum: 0.9 }),
        entry("adam", { beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
      ],
    };
  }

  let lastHash = "";
  function writeHash() {
    lastHash = stateToHash(lab.state);
    history.replaceState(null, "", `#${lastHash}`);
  }

  function requestBody(st) {
    const body = {
      landscape: st.landscape,
      starts: st.starts,
      steps: st.steps,
      schedule: st.schedule,
      optimizers: st.opts.map((o) => ({ name: o.name, lr: o.lr, ...o.knobs })),
      ...landscapeFields(st),
    };
    fire("body", body, st);
    return body;
  }
  // a formula landscape's fields of a request (formula.js)
  function landscapeFields(st) {
    return st.landscape === "custom" ? { formula: st.formula, ...(st.window ? { window: st.window } : {}) } : {};
  }

  // ---------------------------------------------------------------- controls
  function renderControls() {
    const st = lab.state;
    const sel = $("landscape");
    sel.innerHTML = "";
    for (const l of lab.meta.landscapes) if (l.name !== "custom") sel.add(new Option(l.name.replace(/_/g, " "), l.name));
    sel.add(new Option("your formula (custom)", "custom"));
    if (!landMeta(st.landscape) && st.landscape !== "custom") sel.add(new Option(`${st.landscape} (unknown)`, st.landscape));
    sel.value = st.landscape;
    const land = landMeta(st.landscape);
    $("landscape-formula").textContent = land ? `f(x, y) = ${land.formula}` : "";
    $("landscape-description").textContent = land ? land.description : "";
    $("steps").value = Number.isFinite(st.steps) ? st.steps : "";
    $("steps").max = lab.meta.limits.max_steps;
    $("schedule").value = st.schedule;
    $("speed").value = String(st.speed);
    $("starts").value = st.starts.map((p) => p.map((v) => fmt(v, 5)).join(", ")).join("; ");
    renderCards();
    fire("controls", st);
  }

  function renderCards() {
    const box = $("optimizers");
    box.innerHTML = "";
    lab.state.opts.forEach((entry, i) => box.appendChild(card(entry, i)));
    $("add-optimizer").disabled = lab.state.opts.length >= lab.meta.limits.max_optimizers;
  }

  function card(entry, i) {
    const div = document.createElement("div");
    div.className = "opt-card";
    div.dataset.index = i;
    div.style.setProperty("--swatch", colour(i));
    if (dash(i) !== "solid") div.style.borderLeftStyle = dash(i) === "dash" ? "dashed" : "dotted";

    const head = document.createElement("div");
    head.className = "card-head";
    const sel = document.createElement("select");
    sel.className = "opt-name";
    sel.setAttribute("aria-label", `optimizer ${i + 1}`);
    const main = document.createElement("optgroup");
    main.label = "optimizers";
    const variants = document.createElement("optgroup");
    variants.label = "the seeds' variants";
    for (const o of lab.meta.optimizers) (o.main ? main : variants).appendChild(new Option(o.label, o.name));
    sel.append(main, variants);
    if (!optMeta(entry.name)) sel.add(new Option(`${entry.name} (unknown)`, entry.name));
    sel.value = entry.name;
    sel.addEventListener("change", () => {
      lab.state.opts[i] = newEntry(sel.value);
      renderCards();
      changed({ animate: true });
    });
    const rm = document.createElement("button");
    rm.type = "button";
    rm.className = "remove";
    rm.textContent = "×";
    rm.title = "remove this optimizer";
    rm.setAttribute("aria-label", `remove optimizer ${i + 1}`);
    rm.disabled = lab.state.opts.length <= 1;
    rm.addEventListener("click", () => {
      lab.state.opts.splice(i, 1);
      renderCards();
      changed({ animate: true });
    });
    head.append(sel, rm);
    div.appendChild(head);

    div.appendChild(knobRow(entry, "lr", i));
    for (const k of Object.keys(entry.knobs)) div.appendChild(knobRow(entry, k, i));
    fire("card", div, entry, i);
    return div;
  }

  function knobRow(entry, knob, i) {
    const row = document.createElement("div");
    row.className = "knob";
    const id = `opt${i}-${knob}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = KNOB_LABEL[knob] || knob;
    const help = lab.meta.knobs[knob];
    if (help) label.title = help.help;
    const s = sliderFor(knob);
    const range = document.createElement("input");
    range.type = "range";
    range.min = s.min; range.max = s.max; range.step = s.step;
    range.className = `opt-${knob}-slider`;
    range.setAttribute("aria-label", `${knob} slider, optimizer ${i + 1}`);
    const box = document.createElement("input");
    box.type = "number";
    box.id = id;
    box.className = `opt-${knob}`;
    box.step = "any";
    const get = () => (knob === "lr" ? entry.lr : entry.knobs[knob]);
    const set = (v) => { if (knob === "lr") { entry.lr = v; entry.userLr = true; } else entry.knobs[knob] = v; };
    const sync = () => {
      const v = get();
      box.value = Number.isFinite(v) ? String(v) : "";
      if (Number.isFinite(v) && v > 0 && (knob !== "lr" && knob !== "eps" ? v < 1 : true)) {
        range.value = Math.min(s.max, Math.max(s.min, s.from(v)));
      } else if (v === 0) {
        range.value = s.min;
      }
    };
    sync();
    range.addEventListener("input", () => { set(s.to(Number(range.value))); box.value = String(get()); changed({ animate: false, live: true }); });
    box.addEventListener("change", () => { set(num(box.value)); sync(); changed({ animate: false }); });
    row.append(label, range, box);
    return row;
  }

  function bindControls() {
    $("landscape").addEventListener("change", async () => {
      lab.state.landscape = $("landscape").value;
      const land = landMeta(lab.state.landscape);
      if (land) lab.state.starts = [land.start.slice()];
      resetLrs();
      renderControls();
      await loadLandscape();
      changed({ animate: true });
    });
    $("steps").addEventListener("change", () => {
      lab.state.steps = num($("steps").value);
      changed({ animate: true });
    });
    $("schedule").addEventListener("change", () => {
      lab.state.schedule = $("schedule").value.trim();
      changed({ animate: true });
    });
    $("starts").addEventListener("change", () => {
      lab.state.starts = parseStarts($("starts").value);
      changed({ animate: true });
    });
    $("add-optimizer").addEventListener("click", () => {
      const used = new Set(lab.state.opts.map((o) => o.name));
      const next = lab.meta.optimizers.find((o) => o.main && !used.has(o.name)) || lab.meta.optimizers[0];
      lab.state.opts.push(newEntry(next.name));
      renderCards();
      changed({ animate: true });
    });
    $("copy-link").addEventListener("click", async () => {
      writeHash();
      try {
        await navigator.clipboard.writeText(location.href);
        $("copy-status").textContent = "copied";
      } catch (e) {
        $("copy-status").textContent = "copy the address bar: it holds this state";
      }
    });
    $("play").addEventListener("click", () => {
      if (anim.running) stopAnimation();
      else startAnimation(lab.t >= (lab.result ? lab.result.steps : 0) ? 0 : lab.t);
    });
    $("speed").addEventListener("change", () => {
      lab.state.speed = Number($("speed").value);
      writeHash();
      if (anim.running && lab.state.speed === 0) { stopAnimation(); drawFrame(lab.result.steps); }
      else if (anim.running) startAnimation(lab.t);
    });
    $("scrub").addEventListener("input", () => { stopAnimation(); drawFrame(Number($("scrub").value)); });
    $("loss-log").addEventListener("change", () => { if (lab.result) { drawLoss(); drawFrame(lab.t); } });
    for (const [tab, view] of [["tab-contour", "contour"], ["tab-surface", "surface"]]) {
      $(tab).addEventListener("click", () => selectTab(view));
    }
    $("contour").addEventListener("click", onContourClick);
    window.addEventListener("hashchange", () => applyHash(location.hash));
    // a resized window wraps the legend into another number of rows: fit the top margin again
    let refit = null;
    window.addEventListener("resize", () => {
      clearTimeout(refit);
      refit = setTimeout(() => {
        if (!lab.grid || !$("contour-fg").layout) return;
        const margin = contourMargin();
        Plotly.relayout($("contour-bg"), { margin });
        Plotly.relayout($("contour-fg"), { margin }).then(fitLegend);
      }, 250);
    });
  }

  // a new hash (a link, a preset): its state replaces the page's
  async function applyHash(hash) {
    const h = String(hash).replace(/^#/, "");
    if (h === lastHash) return;
    const st = hashToState(h);
    if (!st) return;
    const landChanged = st.landscape !== lab.state.landscape || st.formula !== lab.state.formula
      || String(st.window) !== String(lab.state.window);
    lab.state = st;
    renderControls();
    if (landChanged) await loadLandscape();
    changed({ animate: true });
  }

  function selectTab(view) {
    for (const v of ["contour", "surface"]) {
      $(v).hidden = v !== view;
      $(`tab-${v}`).setAttribute("aria-selected", String(v === view));
    }
    if (view === "surface") drawSurface(true);
    else { Plotly.Plots.resize($("contour-bg")); Plotly.Plots.resize($("contour-fg")); }
  }

  // a click inside the contour's plotting area sets the start (Shift+click adds one)
  function onContourClick(ev) {
    const area = $("contour-fg").querySelector(".nsewdrag");
    if (!area || !lab.grid) return;
    const r = area.getBoundingClientRect();
    if (ev.clientX < r.left || ev.clientX > r.right || ev.clientY < r.top || ev.clientY > r.bottom) return;
    const [x0, x1] = $("contour-fg").layout.xaxis.range;
    const [y0, y1] = $("contour-fg").layout.yaxis.range;
    const x = nice(x0 + ((ev.clientX - r.left) / r.width) * (x1 - x0), 4);
    const y = nice(y1 - ((ev.clientY - r.top) / r.height) * (y1 - y0), 4);
    const max = lab.meta.limits.max_starts;
    if (ev.shiftKey && lab.state.starts.length < max) lab.state.starts.push([x, y]);
    else lab.state.starts = [[x, y]];
    $("starts").value = lab.state.starts.map((p) => p.map((v) => fmt(v, 5)).join(", ")).join("; ");
    changed({ animate: true });
  }

  // ---------------------------------------------------------------- requests
  let timer = null;
  let seq = 0;
  let pendingAnimate = false;
  let inFlight = false;
  let again = false;
  // live changes (a slider moving) are sent at once, one request in flight at a time: the latest
  // state goes as soon as the previous answer is drawn, so the page redraws while the slider
  // moves; other changes wait 120 ms for more typing
  function changed({ animate, live = false }) {
    writeHash();
    pendingAnimate = pendingAnimate || animate;
    clearTimeout(timer);
    if (!live) { timer = setTimeout(runNow, 120); return; }
    if (inFlight) { again = true; return; }
    runNow();
  }

  async function runNow() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    try { await runOnce(); } finally { inFlight = false; }
    if (again) { again = false; runNow(); }
  }

  async function runOnce() {
    const my = ++seq;
    const animate = pendingAnimate;
    pendingAnimate = false;
    document.body.dataset.status = "loading";
    $("metrics-note").textContent = "computing…";
    const badStart = lab.state.starts.some((p) => p.length !== 2 || p.some((v) => !Number.isFinite(v)));
    if (!lab.state.starts.length || badStart) {
      fail("start points must be written as 'x, y; x, y' (numbers)");
      return;
    }
    try {
      const result = await api("/api/run", requestBody(lab.state));
      if (my !== seq) return;   // a newer request is on its way
      showError(null);
      lab.result = result;
      lab.runId += 1;
      drawResult(animate);
      document.body.dataset.status = "ready";
      document.body.dataset.runId = String(lab.runId);
      $("metrics-note").textContent =
        `(${result.runs.length} optimizer${result.runs.length > 1 ? "s" : ""} × ${result.starts.length} start${result.starts.length > 1 ? "s" : ""}, ` +
        `${result.steps} steps; f* = ${fmt(result.f_star)}, tol ${fmt(result.tol)}; computed in ${fmt(result.elapsed_s, 2)} s)`;
    } catch (e) {
      if (my !== seq) return;
      fail(e.message);
    }
  }

  function fail(msg) {
    showError(msg);
    document.body.dataset.status = "error";
    $("metrics-note").textContent = lab.result ? "(showing the last valid run)" : "(no run yet)";
  }

  async function loadLandscape() {
    try {
      lab.grid = lab.state.landscape === "custom" && lab.customGrid ? await lab.customGrid(lab.state, GRID_RESOLUTION)
        : await api(`/api/landscape/${encodeURIComponent(lab.state.landscape)}?resolution=${GRID_RESOLUTION}`);
      let lo = Infinity, hi = -Infinity;
      for (const row of lab.grid.zplot || lab.grid.z) for (const v of row) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      lab.grid.zrange = [lo, hi];
      let zmax = -Infinity;
      for (const row of lab.grid.z) for (const v of row) if (v !== null && v > zmax) zmax = v;
      lab.grid.zmax = zmax;
      surfaceDrawn = null;
      drawContourBase();
      return true;
    } catch (e) {
      fail(e.message);
      return false;
    }
  }

  // ---------------------------------------------------------------- drawing
  const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["toImage", "select2d", "lasso2d"] };
  const GREYS = [[0, "#ffffff"], [0.5, "#d9d9d9"], [1, "#9a9a9a"]];

  // The contour view is two plotly figures stacked in #contour: #contour-bg draws the landscape
  // (axes, contour, colour bar) and is redrawn only when the landscape changes; #contour-fg, on
  // top with a transparent background, draws the markers and the trajectories. An animation
  // frame then restyles only the light foreground: redrawing the contour with every frame made
  // each frame about five times slower (measured in headless Chromium: 210 ms vs 40 ms).
  function contourTrace() {
    const g = lab.grid;
    const label = g.zplot_label;
    return {
      type: "contour", x: g.x, y: g.y, z: g.zplot || g.z, colorscale: GREYS, ncontours: 28,
      contours: { coloring: "heatmap", showlines: true },
      line: { color: "rgba(40,40,40,0.35)", width: 0.7 },
      colorbar: { title: { text: label, side: "right" }, thickness: 12, len: 1, x: 1.02, xanchor: "left", y: 0.5 },
      hoverinfo: "skip", showlegend: false,
    };
  }

  function baseTraces() {
    const land = landMeta(lab.grid.name);
    return [
      {
        type: "scatter", mode: "markers", name: "known minimum",
        x: land.minima.map((m) => m[0]), y: land.minima.map((m) => m[1]),
        marker: { symbol: "star", size: 15, color: "#ffffff", line: { color: "#000", width: 1.5 } },
        hovertemplate: "minimum (%{x:.4g}, %{y:.4g})<extra></extra>",
      },
      {
        type: "scatter", mode: "markers", name: "saddle", visible: land.saddles.length ? true : false,
        x: land.saddles.map((m) => m[0]), y: land.saddles.map((m) => m[1]),
        marker: { symbol: "x-thin-open", size: 13, color: "#000", line: { width: 2.5, color: "#000" } },
        hovertemplate: "saddle (%{x:.4g}, %{y:.4g})<extra></extra>",
      },
      {
        type: "scatter", mode: "markers", name: "start",
        x: lab.state.starts.map((p) => p[0]), y: lab.state.starts.map((p) => p[1]),
        marker: { symbol: "circle", size: 12, color: "#ffffff", line: { color: "#000", width: 2 } },
        hovertemplate: "start (%{x:.4g}, %{y:.4g})<extra></extra>",
      },
    ];
  }

  // both layers share these margins exactly (no automatic expansion), so their axes coincide;
  // the top margin holds the legend (about three entries per row)
  // the top margin holds the legend: its entries packed into rows by their estimated width
  function contourMargin() {
    const names = ["known minimum", "start"];
    const land = lab.grid ? landMeta(lab.grid.name) : null;
    if (land && land.saddles.length) names.push("saddle");
    if (lab.result) lab.result.runs.forEach((run, i) => names.push(entryName(run, i)));
    const width = Math.max(200, ($("contour").clientWidth || 800) - 20);
    let rows = 1, used = 0;
    for (const n of names) {
      const w = 44 + 7.6 * n.length;
      if (used > 0 && used + w > width) { rows += 1; used = 0; }
      used += w;
    }
    return { l: 56, r: 96, t: 14 + 22 * rows, b: 44, autoexpand: false };
  }

  // the legend's real height (plotly wraps it to the width): grow the top margin of both layers
  // where the estimate was short, so the legend never covers the plot or leaves the figure
  function fitLegend() {
    const fg = $("contour-fg");
    const legend = fg.querySelector(".legend");
    if (!legend || !fg.layout) return;
    const need = Math.ceil(legend.getBoundingClientRect().height) + 8;
    if (need > fg.layout.margin.t) {
      const margin = { ...fg.layout.margin, t: need };
      Plotly.relayout($("contour-bg"), { margin });
      Plotly.relayout(fg, { margin });
    }
    fitHeight(Math.max(need, fg.layout.margin.t));
  }

  // a legend of many rows (a narrow screen, many optimizers) must not eat the plot: plotly also
  // caps a horizontal legend at half the figure (the rest scrolls, hiding entries), so the figure
  // grows until the plotting area keeps MIN_PLOT px and the legend fits in half of it
  const MIN_PLOT = 260;
  function fitHeight(top) {
    const box = $("contour");
    const current = box.clientHeight;
    box.style.height = "";
    const css = box.clientHeight;
    const want = Math.max(css, top + $("contour-fg").layout.margin.b + MIN_PLOT, 2 * top + 24);
    if (want > css) box.style.height = `${want}px`;
    if (Math.abs(box.clientHeight - current) > 2) {
      Promise.all([Plotly.Plots.resize($("contour-bg")), Plotly.Plots.resize($("contour-fg"))]).then(fitLegend);
    }
  }

  function contourLayout(foreground) {
    const land = landMeta(lab.grid.name);
    const axis = (range, title) => (foreground
      ? { range, fixedrange: true, showgrid: false, zeroline: false, showticklabels: false, ticks: "", showline: false }
      : { range, fixedrange: true, title: { text: title }, zeroline: false });
    const layout = {
      margin: contourMargin(),
      xaxis: axis(land.window[0].slice(), "x"),
      yaxis: axis(land.window[1].slice(), "y"),
      hovermode: "closest", dragmode: false,
      font: { family: "DejaVu Sans, Arial, sans-serif", size: 13 },
      uirevision: lab.grid.name,
    };
    if (foreground) {
      layout.paper_bgcolor = "rgba(0,0,0,0)";
      layout.plot_bgcolor = "rgba(0,0,0,0)";
      layout.legend = { orientation: "h", x: 0, y: 1.0, yanchor: "bottom", font: { size: 13 }, bgcolor: "rgba(255,255,255,0.8)" };
    } else {
      layout.showlegend = false;
    }
    return layout;
  }

  const FG_CONFIG = { displayModeBar: false, responsive: true };

  function drawContourBase() {
    Plotly.react($("contour-bg"), [contourTrace()], contourLayout(false), { ...CONFIG, displayModeBar: false });
    Plotly.react($("contour-fg"), baseTraces(), contourLayout(true), FG_CONFIG);
  }

  // where the segment a -> b leaves the box [x0, x1] x [y0, y1] (a inside); b non-finite: a itself
  function exitPoint(a, b, [[x0, x1], [y0, y1]]) {
    if (!b || b.some((v) => v === null || !isFinite(v))) return a.slice();
    let t = 1;
    const d = [b[0] - a[0], b[1] - a[1]];
    for (const [lo, hi, k] of [[x0, x1, 0], [y0, y1, 1]]) {
      if (d[k] > 0 && b[k] > hi) t = Math.min(t, (hi - a[k]) / d[k]);
      if (d[k] < 0 && b[k] < lo) t = Math.min(t, (lo - a[k]) / d[k]);
    }
    return [a[0] + t * d[0], a[1] + t * d[1]];
  }

  // per entry, per start: the path drawn up to where it left the window (its last point on the
  // window's edge), the loss up to the step before, and the step k it left at (null: it stayed)
  function series(result) {
    const land = landMeta(result.landscape);
    return result.runs.map((run) => {
      const n = run.path[0].length;
      const xs = [], ys = [], loss = [], cut = [], exits = [];
      for (let s = 0; s < n; s++) {
        const k = run.left_window ? run.left_window[s] : null;
        const last = k === null ? run.path.length - 1 : k;
        const px = [], py = [], pl = [];
        for (let t = 0; t <= last; t++) {
          let p = run.path[t][s];
          if (k !== null && t === k) p = k === 0 ? p : exitPoint(run.path[k - 1][s], p, land.window);
          px.push(p[0]); py.push(p[1]);
          if (k === null || t < k) pl.push(run.loss[t][s]);
        }
        xs.push(px); ys.push(py); loss.push(pl); cut.push(k);
        exits.push(k === null ? null : [px[px.length - 1], py[py.length - 1]]);
      }
      return { xs, ys, loss, cut, exits };
    });
  }

  function divergedNote(s) {
    const steps = s.cut.map((k, j) => [k, j]).filter(([k]) => k !== null);
    if (!steps.length) return "";
    if (s.cut.length === 1) return ` — diverged at step ${steps[0][0]}`;
    return ` — diverged: ${steps.map(([k, j]) => `start ${j + 1} at step ${k}`).join(", ")}`;
  }

  function entryName(run, i) {
    const knobs = Object.entries(run.hyper).filter(([k]) => k !== "eps")
      .map(([k, v]) => `${KNOB_LABEL[k] || k}=${fmt(v, 3)}`);
    return `${run.label} lr=${fmt(run.lr, 3)}${knobs.length ? " " + knobs.join(" ") : ""}` +
      (lab.series && lab.series[i] ? divergedNote(lab.series[i]) : "");
  }

  // contour foreground: BASE_TRACES, then per entry: its lines, its current points, its exit marks
  const PER_ENTRY = 3;

  function drawResult(animate) {
    const result = lab.result;
    lab.series = series(result);
    const traces = baseTraces();
    traces[2].x = result.starts.map((p) => p[0]);
    traces[2].y = result.starts.map((p) => p[1]);
    result.runs.forEach((run, i) => {
      const c = run.colour || colour(i);
      traces.push({
        type: "scatter", mode: "lines", name: entryName(run, i), legendgroup: `e${i}`,
        x: [], y: [], line: { color: c, width: 2.6, dash: dash(i), simplify: false },
        hovertemplate: `${run.label}<br>(%{x:.4g}, %{y:.4g})<extra></extra>`,
      });
      traces.push({
        type: "scatter", mode: "markers", showlegend: false, legendgroup: `e${i}`, x: [], y: [],
        marker: { color: c, size: 10, line: { color: "#fff", width: 1.5 } },
        hovertemplate: `${run.label} now (%{x:.4g}, %{y:.4g})<extra></extra>`,
      });
      traces.push({
        type: "scatter", mode: "markers", showlegend: false, legendgroup: `e${i}`, x: [], y: [],
        marker: { color: c, size: 16, symbol: "x-thin", line: { color: c, width: 4 } },
        hovertemplate: `${run.label} left the window here<extra></extra>`,
      });
    });
    Plotly.relayout($("contour-bg"), { margin: contourMargin() });
    Plotly.react($("contour-fg"), traces, contourLayout(true), FG_CONFIG).then(fitLegend);
    $("scrub").max = result.steps;
    drawLoss();
    drawTable();
    surfaceDrawn = null;
    if (!$("surface").hidden) drawSurface(true);
    fire("result", result);
    if (animate) startAnimation(0);
    else { stopAnimation(); drawFrame(result.steps); }
  }

  function lossValue(v, fStar, log) {
    if (v === null) return null;
    if (!log) return v;
    return Math.max(v - fStar, 1e-16);
  }

  // the loss axis: finite values up to the largest value of f on the window (larger ones belong
  // to a run leaving it and would flatten every other curve)
  function lossRange(result, log) {
    const cap = lab.grid && lab.grid.zmax !== undefined ? lossValue(lab.grid.zmax, result.f_star, log) : Infinity;
    let lo = Infinity, hi = -Infinity;
    lab.series.forEach((s) => s.loss.forEach((arr) => arr.forEach((v) => {
      const y = lossValue(v, result.f_star, log);
      if (y === null || !isFinite(y) || y > cap) return;
      lo = Math.min(lo, y); hi = Math.max(hi, y);
    })));
    if (!(lo <= hi)) return null;
    if (log) { const a = Math.log10(lo), b = Math.log10(hi); const pad = Math.max(0.1, (b - a) * 0.04); return [a - pad, b + pad]; }
    const pad = Math.max(1e-12, (hi - lo) * 0.04);
    return [lo - pad, hi + pad];
  }

  function drawLoss() {
    const result = lab.result;
    const log = $("loss-log").checked;
    const range = lossRange(result, log);
    lab.lossRange = range;
    const traces = [];
    result.runs.forEach((run, i) => {
      const c = run.colour || colour(i);
      traces.push({
        type: "scatter", mode: "lines", name: entryName(run, i), x: [], y: [],
        line: { color: c, width: 2.2, dash: dash(i) },
        hovertemplate: `${run.label}<br>step %{x}<br>%{y:.4g}<extra></extra>`,
      });
      traces.push({
        type: "scatter", mode: "markers+text", showlegend: false, x: [], y: [], text: [],
        textposition: "top left", textfont: { color: c, size: 12 }, cliponaxis: false,
        marker: { color: c, size: 13, symbol: "x-thin", line: { color: c, width: 3 } },
        hovertemplate: `${run.label} diverged at step %{x}<extra></extra>`,
      });
    });
    Plotly.react($("loss"), traces, {
      margin: { l: 62, r: 8, t: 8, b: 40 }, showlegend: false,
      xaxis: { range: [0, result.steps], title: { text: "step t" }, fixedrange: true },
      yaxis: {
        type: log ? "log" : "linear", range, autorange: range ? false : true, fixedrange: true,
        title: { text: log ? "f(wₜ) − f*" : "f(wₜ)" }, exponentformat: "power",
      },
      font: { family: "DejaVu Sans, Arial, sans-serif", size: 13 },
    }, CONFIG);
  }

  // the traces of entry i up to step t: all starts in one trace, separated by nulls
  function upTo(arrs, t) {
    const out = [];
    arrs.forEach((a, s) => { if (s) out.push(null); for (let k = 0; k <= Math.min(t, a.length - 1); k++) out.push(a[k]); });
    return out;
  }

  function restyle(gd, update, idx) {
    // only traces that exist (a frame of an older result must not address a newer layout)
    const n = gd.data ? gd.data.length : 0;
    const keep = idx.map((k, j) => [k, j]).filter(([k]) => k < n);
    if (!keep.length) return;
    const sub = {};
    for (const key of Object.keys(update)) sub[key] = keep.map(([, j]) => update[key][j]);
    Plotly.restyle(gd, sub, keep.map(([k]) => k));
  }

  function drawFrame(t) {
    const result = lab.result;
    if (!result) return;
    t = Math.max(0, Math.min(result.steps, Math.round(t)));
    lab.t = t;
    const xs = [], ys = [], idx = [];
    lab.series.forEach((s, i) => {
      const base = BASE_TRACES + PER_ENTRY * i;
      xs.push(upTo(s.xs, t)); ys.push(upTo(s.ys, t)); idx.push(base);
      xs.push(s.xs.map((a, j) => (s.cut[j] === null || t < a.length - 1 ? a[Math.min(t, a.length - 1)] : null)));
      ys.push(s.ys.map((a, j) => (s.cut[j] === null || t < a.length - 1 ? a[Math.min(t, a.length - 1)] : null)));
      idx.push(base + 1);
      xs.push(s.exits.map((e, j) => (e && s.cut[j] <= t ? e[0] : null)));
      ys.push(s.exits.map((e, j) => (e && s.cut[j] <= t ? e[1] : null)));
      idx.push(base + 2);
    });
    restyle($("contour-fg"), { x: xs, y: ys }, idx);
    const log = $("loss-log").checked;
    const range = lab.lossRange;
    const lx = [], ly = [], lt = [], lidx = [];
    lab.series.forEach((s, i) => {
      lx.push(upTo(s.loss.map((a) => a.map((_, k) => k)), t));
      ly.push(upTo(s.loss.map((a) => a.map((v) => lossValue(v, result.f_star, log))), t));
      lt.push(null);
      lidx.push(2 * i);
      // the x: at the last step drawn, held inside the axis range
      const mx = [], my = [], txt = [];
      s.cut.forEach((k, j) => {
        if (k === null || k > t) return;
        const last = s.loss[j].length - 1;
        let y = last >= 0 ? lossValue(s.loss[j][last], result.f_star, log) : null;
        if (range) {
          const top = log ? 10 ** range[1] : range[1];
          if (y === null || !isFinite(y) || y > top) y = top;
        }
        mx.push(Math.max(0, k - 1)); my.push(y); txt.push(`diverged at step ${k}`);
      });
      lx.push(mx); ly.push(my); lt.push(txt); lidx.push(2 * i + 1);
    });
    restyle($("loss"), { x: lx, y: ly }, lidx);
    restyle($("loss"), { text: lt.filter((_, j) => j % 2 === 1) }, lidx.filter((_, j) => j % 2 === 1));
    if (!$("surface").hidden) drawSurface(false);
    $("scrub").value = t;
    $("step-label").textContent = `step ${t} / ${result.steps}`;
    fire("frame", t);
  }

  // ---------------------------------------------------------------- 3-D view
  let surfaceDrawn = null;
  let surfaceLast = 0;
  // the height of a trajectory point in the 3-D view: the surface's own scale, lifted a little
  // above the surface so the line is not hidden in it
  function surfaceZ(v) {
    if (v === null || v === undefined) return null;
    const g = lab.grid;
    const lift = 0.015 * (g.zrange[1] - g.zrange[0]);
    return (g.log_plot ? Math.log10(Math.max(v - lab.result.f_star, 0) + g.log_offset) : v) + lift;  // Landscape.plot_height
  }

  function drawSurface(force) {
    if (!lab.grid) return;
    const now = performance.now();
    if (!force && now - surfaceLast < 150 && lab.t < (lab.result ? lab.result.steps : 0)) return;
    surfaceLast = now;
    const g = lab.grid;
    const land = landMeta(g.name);
    const [[x0, x1], [y0, y1]] = land.window;
    const inside = (x, y) => x !== null && y !== null && x >= x0 && x <= x1 && y >= y0 && y <= y1;
    const traces = [{
      type: "surface", x: g.x, y: g.y, z: g.zplot || g.z, colorscale: "Viridis", opacity: 0.85, showscale: false,
      contours: { z: { show: true, usecolormap: true, project: { z: false } } },
      hovertemplate: `x %{x:.3f}<br>y %{y:.3f}<br>${g.zplot_label} %{z:.4g}<extra></extra>`,
    }];
    if (lab.result && lab.series) {
      const t = lab.t;
      lab.series.forEach((s, i) => {
        const x = [], y = [], z = [];
        s.xs.forEach((xa, k) => {
          if (k) { x.push(null); y.push(null); z.push(null); }
          for (let j = 0; j <= t; j++) {
            const ok = inside(xa[j], s.ys[k][j]);
            x.push(ok ? xa[j] : null); y.push(ok ? s.ys[k][j] : null); z.push(ok ? surfaceZ(s.loss[k][j]) : null);
          }
        });
        traces.push({
          type: "scatter3d", mode: "lines", name: lab.result.runs[i].label, x, y, z,
          line: { color: colour(i), width: 6 }, hoverinfo: "skip",
        });
      });
    }
    const layout = {
      margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: false, uirevision: g.name,
      scene: {
        xaxis: { title: { text: "x" }, range: [x0, x1] }, yaxis: { title: { text: "y" }, range: [y0, y1] },
        zaxis: { title: { text: g.zplot_label } },
        aspectmode: "manual", aspectratio: { x: 1, y: 1, z: 0.6 },
        camera: { eye: { x: 0.65, y: -1.05, z: 1.3 } },
      },
      font: { family: "DejaVu Sans, Arial, sans-serif", size: 12 },
    };
    try {
      Plotly.react($("surface"), traces, layout, CONFIG);
      surfaceDrawn = g.name;
    } catch (e) {
      $("surface").textContent = `the 3-D view needs WebGL, which this browser does not offer (${e.message})`;
    }
  }

  // ---------------------------------------------------------------- animation
  const anim = { running: false, start: 0, from: 0, handle: null };
  function setPlayLabel() { $("play").textContent = anim.running ? "❚❚" : "▶"; }

  function startAnimation(from) {
    stopAnimation();
    if (!lab.result) return;
    if (lab.state.speed === 0) { drawFrame(lab.result.steps); return; }
    anim.running = true;
    anim.from = from;
    anim.start = performance.now();
    document.body.dataset.anim = "running";
    setPlayLabel();
    const steps = lab.result.steps;
    const rate = Math.max(20, steps / ANIM_SECONDS);   // steps per second at 1x
    const tick = (now) => {
      if (!anim.running) return;
      const speed = lab.state.speed || 1;
      const t = Math.min(steps, anim.from + Math.floor(((now - anim.start) / 1000) * rate * speed));
      drawFrame(t);
      if (t >= steps) { stopAnimation(); return; }
      anim.handle = requestAnimationFrame(tick);
    };
    drawFrame(from);
    anim.handle = requestAnimationFrame(tick);
  }

  function stopAnimation() {
    if (anim.handle) cancelAnimationFrame(anim.handle);
    anim.handle = null;
    anim.running = false;
    document.body.dataset.anim = "done";
    setPlayLabel();
  }

  // ---------------------------------------------------------------- metrics table
  function drawTable() {
    const result = lab.result;
    const land = landMeta(result.landscape);
    const hasSaddle = land.saddles.length > 0;
    const cols = ["", "optimizer", "lr", "start (x, y)", "final (x, y)", "final loss", "steps to tol",
      "nearest minimum", "path length", "straightness", "oscillation", "diverged"];
    if (hasSaddle) cols.push("escaped saddle");
    const thead = $("metrics").tHead;
    thead.innerHTML = "";
    const hr = thead.insertRow();
    cols.forEach((c, j) => { const th = document.createElement("th"); th.textContent = c; if (j === 1) th.className = "name"; hr.appendChild(th); });
    const tbody = $("metrics").tBodies[0];
    tbody.innerHTML = "";
    result.runs.forEach((run, i) => {
      const hyper = Object.entries(run.hyper).map(([k, v]) => `${KNOB_LABEL[k] || k}=${fmt(v, 4)}`).join("  ");
      run.metrics.forEach((m, s) => {
        const tr = tbody.insertRow();
        tr.dataset.optimizer = run.name;
        tr.dataset.entry = i;
        tr.dataset.start = s;
        const cells = [
          null, null, fmt(run.lr, 3),
          `${fmt(m.x0)}, ${fmt(m.y0)}`, `${fmt(m.x_final)}, ${fmt(m.y_final)}`,
          fmt(m.final_loss), m.steps_to_tol >= 0 ? String(m.steps_to_tol) : "never",
          `#${m.nearest_minimum + 1} at ${fmt(m.distance_to_minimum, 3)}`,
          fmt(m.path_length), fmt(m.straightness, 3), String(m.oscillation), m.diverged ? "yes" : "no",
        ];
        if (hasSaddle) cells.push(m.escaped_saddle ? `at step ${m.steps_to_escape}` : "no");
        cells.forEach((c, j) => {
          const td = tr.insertCell();
          if (j === 0) {
            const dot = document.createElement("span");
            dot.className = "dot";
            dot.style.background = colour(i);
            if (dash(i) !== "solid") dot.style.opacity = "0.6";
            td.appendChild(dot);
          } else if (j === 1) {
            td.className = "name";
            const b = document.createElement("span");
            b.textContent = run.label;
            td.appendChild(b);
            if (hyper) {
              const h = document.createElement("span");
              h.className = "hyper";
              h.textContent = hyper;
              td.appendChild(h);
            }
          } else td.textContent = c;
          if (j === 11 && m.diverged) td.className = "yes";
        });
      });
    });
  }

  // what the page's other scripts (formula.js, stability.js) use
  Object.assign(lab, { api, changed, renderControls, renderCards, loadLandscape, resetLrs, showError, fail, fmt,
                       landMeta, optMeta, landscapeFields, writeHash });

  // ---------------------------------------------------------------- start
  async function init() {
    try {
      lab.meta = await api("/api/meta");
    } catch (e) {
      fail(e.message);
      return;
    }
    lab.state = defaultState();
    const fromHash = hashToState(location.hash);
    if (fromHash) lab.state = fromHash;
    renderControls();
    bindControls();
    writeHash();
    if (await loadLandscape()) {
      pendingAnimate = true;
      await runNow();
    }
  }

  // a piece of page added by another script: <tag attrs>html</tag> put before / after an element
  function insert(tag, attrs, html, anchor, after = false) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) if (k === "hidden") el.hidden = v; else el.setAttribute(k, v);
    el.innerHTML = html;
    anchor.parentNode.insertBefore(el, after ? anchor.nextSibling : anchor);
    return el;
  }

  Object.assign(lab, { api, fmt, num, colour, dash, changed, applyHash, drawFrame, stopAnimation, optMeta, landMeta,
                       writeHash, insert, KNOB_LABEL });
  document.addEventListener("DOMContentLoaded", init);
})();
