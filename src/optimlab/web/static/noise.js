// optimlab web lab: gradient noise, the lab's stochastic mode (optimlab/lab/noise.py). sd adds
// Gaussian noise of that size to each gradient coordinate; batch uses that many examples per step
// on a data landscape (least_squares, scaled_features); seed fixes every draw. Sent to the server
// as "noise": {sd, batch, seed} (validated there) and kept in the URL hash as the tour writes it:
// noise=sd=0.5,batch=1,seed=7 (optimlab.lab.tour.core.try_it_url).
"use strict";

(() => {
  const lab = window.optimlabLab;
  const $ = (id) => document.getElementById(id);

  const active = (nz) => !!nz && (nz.sd !== 0 || nz.batch !== null);

  // the spec string of optimlab.lab.noise.Noise.spec(): sd (if any), batch (if any), seed
  function spec(nz) {
    const parts = [];
    if (nz.sd) parts.push(`sd=${nz.sd}`);
    if (nz.batch !== null) parts.push(`batch=${nz.batch}`);
    parts.push(`seed=${nz.seed}`);
    return parts.join(",");
  }

  // "sd=0.5,batch=8,seed=0" -> {sd, batch, seed}; a bad field is kept as NaN (the server answers
  // it with a message naming the field and its range)
  function parse(text) {
    const nz = { sd: 0, batch: null, seed: 0, bad: null };
    if (!text || text === "none") return null;
    for (const part of String(text).split(",")) {
      const [k, v] = part.split("=");
      if (!["sd", "batch", "seed"].includes(k)) { nz.bad = `noise: ${JSON.stringify(part)} is not sd=NUMBER, batch=INTEGER or seed=INTEGER`; continue; }
      nz[k] = lab.num(v);
    }
    return nz;
  }

  function build() {
    lab.insert("section", { id: "noise-section" },
      '<h2>Gradient noise <span class="note">(stochastic gradients)</span></h2>' +
      '<div class="row3">' +
      '<div><label for="noise-sd" title="standard deviation of Gaussian noise added to each gradient coordinate">sd</label>' +
      '<input id="noise-sd" type="number" min="0" step="any" placeholder="0"></div>' +
      '<div><label for="noise-batch" title="examples per step on a data landscape (least squares, scaled features); empty: all">batch</label>' +
      '<input id="noise-batch" type="number" min="1" step="1" placeholder="all"></div>' +
      '<div><label for="noise-seed" title="seed of every draw">seed</label>' +
      '<input id="noise-seed" type="number" min="0" step="1" placeholder="0"></div>' +
      "</div>" +
      '<p id="noise-note" class="note"></p>', document.querySelector("#controls section.share"));
    for (const id of ["noise-sd", "noise-batch", "noise-seed"]) {
      $(id).addEventListener("change", () => {
        const sd = $("noise-sd").value.trim(), batch = $("noise-batch").value.trim(), seed = $("noise-seed").value.trim();
        const nz = { sd: sd === "" ? 0 : lab.num(sd), batch: batch === "" ? null : lab.num(batch), seed: seed === "" ? 0 : lab.num(seed), bad: null };
        lab.state.noise = active(nz) ? nz : null;
        sync(lab.state);
        lab.changed({ animate: true });
      });
    }
  }

  function sync(st) {
    if (!$("noise-sd")) return;
    const nz = st.noise;
    $("noise-sd").value = nz && nz.sd ? String(nz.sd) : "";
    $("noise-batch").value = nz && nz.batch !== null ? String(nz.batch) : "";
    $("noise-seed").value = nz && nz.seed ? String(nz.seed) : "";
    const land = lab.landMeta(st.landscape);
    const data = land && land.examples;
    $("noise-batch").disabled = !data && !(nz && nz.batch !== null);
    $("noise-note").textContent = (active(nz) ? `noise=${spec(nz)}: the loss drawn stays the exact f. ` : "") +
      (data ? `${land.examples} examples: batch 1 is stochastic GD, ${land.examples} (or empty) batch GD.`
        : "batch needs a data landscape (least squares, scaled features).");
  }

  lab.hooks.fromHash.push((q, st) => {
    st.noise = q.has("noise") ? parse(q.get("noise")) : null;
  });
  lab.hooks.toHash.push((parts, st) => {
    if (active(st.noise)) parts.push(`noise=${spec(st.noise)}`);
  });
  lab.hooks.body.push((body, st) => {
    if (st.noise && st.noise.bad) throw new Error(st.noise.bad);
    if (active(st.noise)) body.noise = { sd: st.noise.sd, batch: st.noise.batch, seed: st.noise.seed };
  });
  lab.hooks.controls.push(sync);
  lab.noise = { parse, spec };

  document.addEventListener("DOMContentLoaded", build);
})();
