// optimlab web lab: the tour's experiments as presets. GET /api/presets lists every section of the
// tour (optimlab tour) and its "try it" links; choosing one loads its exact settings (landscape,
// starts, steps, schedule, optimizers with lr and knobs, noise) through the URL hash, as the tour's
// own links do, and shows the numbers the tour reports for it next to whether the table matches.
"use strict";

(() => {
  const lab = window.optimlabLab;
  const $ = (id) => document.getElementById(id);
  const presets = { list: null, current: null };
  lab.presets = presets;

  function build() {
    lab.insert("section", { id: "preset-section" },
      '<label for="preset">Tour experiments <span class="note">(optimlab tour)</span></label>' +
      '<select id="preset"><option value="">choose a section of the tour…</option></select>' +
      '<p id="preset-note" class="note" aria-live="polite"></p>', document.querySelector("#controls section"));
    $("preset").addEventListener("change", () => {
      const v = $("preset").value;
      if (!v) return;
      const [si, li] = v.split(":").map(Number);
      load(presets.list.sections[si], presets.list.sections[si].links[li]);
    });
    // a change the learner makes by hand ends the preset (its numbers no longer apply)
    $("controls").addEventListener("change", (ev) => { if (ev.target.id !== "preset") forget(); });
    $("controls").addEventListener("input", (ev) => { if (ev.target.id !== "preset") forget(); });
    $("contour").addEventListener("click", forget);
    fill();
  }

  async function fill() {
    try {
      presets.list = await lab.api("/api/presets");
    } catch (e) {
      $("preset-note").textContent = `no presets (${e.message})`;
      return;
    }
    const sel = $("preset");
    presets.list.sections.forEach((s, si) => {
      const group = document.createElement("optgroup");
      group.label = s.title;
      if (!s.links.length) {
        const o = new Option(`${s.key}: no lab experiment (not a 2-D run)`, "");
        o.disabled = true;
        group.appendChild(o);
      }
      s.links.forEach((l, li) => group.appendChild(new Option(l.text, `${si}:${li}`)));
      sel.appendChild(group);
    });
    document.body.dataset.presets = "ready";
  }

  function load(section, link) {
    presets.current = { section, link, hash: link.hash };
    note();
    // the animation speed is the viewer's choice, not the experiment's: kept
    const speed = lab.state && lab.state.speed !== 1 ? `&speed=${lab.state.speed}` : "";
    lab.applyHash(link.hash + speed);
  }

  function forget() {
    if (!presets.current) return;
    presets.current = null;
    $("preset").value = "";
    note();
  }

  const label = (name) => { const o = lab.optMeta(name); return o ? o.label : name; };

  function describe(n) {
    let t = `${label(n.optimizer)}: ` + (n.diverged ? "diverged" : `final loss ${lab.fmt(n.final_loss)}`);
    if (n.steps_to_tol >= 0) t += `, tol at step ${n.steps_to_tol}`;
    if (n.steps_to_escape !== undefined && n.steps_to_escape >= 0) t += `, left the saddle at step ${n.steps_to_escape}`;
    return t;
  }

  // does the table show the tour's numbers? (the same runs: every number equal)
  function matches(result, numbers) {
    const rows = [];
    result.runs.forEach((run) => run.metrics.forEach((m) => rows.push([run.name, m])));
    if (rows.length !== numbers.length) return false;
    return numbers.every((n, j) => {
      const [name, m] = rows[j];
      return name === n.optimizer && m.final_loss === n.final_loss && m.steps_to_tol === n.steps_to_tol &&
        m.diverged === n.diverged && m.nearest_minimum === n.nearest_minimum &&
        (n.steps_to_escape === undefined || m.steps_to_escape === n.steps_to_escape);
    });
  }

  function note(result) {
    const box = $("preset-note");
    const cur = presets.current;
    if (!cur) { box.textContent = ""; delete document.body.dataset.presetMatch; return; }
    const parts = [`${cur.section.title}. The tour reports: ${cur.link.numbers.map(describe).join("; ")}.`];
    if (result) {
      const ok = matches(result, cur.link.numbers);
      parts.push(ok ? "The table below shows the same numbers ✓" : "The table differs from the tour's numbers.");
      document.body.dataset.presetMatch = ok ? "yes" : "no";
    }
    box.textContent = parts.join(" ");
  }

  lab.hooks.result.push((result) => note(result));

  document.addEventListener("DOMContentLoaded", build);
})();
