// optimlab web lab: each optimizer card shows its update rule as MathML (rendered by the browser,
// nothing fetched), with the card's current numbers. The rule's form is the catalogue's
// (GET /api/meta: optimizers[i].rule, written by optimlab/display.py): every number is an
// <mn data-knob="NAME">, and this script writes the card's value of NAME into it as knobs move.
"use strict";

(() => {
  const lab = window.optimlabLab;
  const show = (v) => String(Number(Number(v).toPrecision(4))).replace("-", "\u2212");

  function fill(box, entry) {
    for (const mn of box.querySelectorAll("mn[data-knob]")) {
      const k = mn.dataset.knob;
      const v = k === "lr" ? entry.lr : entry.knobs[k];
      if (typeof v === "number" && Number.isFinite(v)) mn.textContent = show(v);
    }
  }

  lab.hooks.card.push((div, entry) => {
    const o = lab.optMeta(entry.name);
    const box = document.createElement("details");
    box.className = "rule";
    box.open = true;
    const head = document.createElement("summary");
    head.textContent = "update rule";
    box.appendChild(head);
    if (!o || !o.rule) {
      const p = document.createElement("p");
      p.className = "note";
      p.textContent = "no rule display declared for this optimizer (see its docstring)";
      box.appendChild(p);
      div.appendChild(box);
      return;
    }
    const body = document.createElement("div");
    body.className = "rule-lines";
    // the markup is the server's own (optimlab/display.py writes it from the catalogue), not input
    body.innerHTML = o.rule.mathml.join("");
    box.appendChild(body);
    fill(body, entry);
    const refresh = () => fill(body, entry);
    div.addEventListener("input", refresh);
    div.addEventListener("change", refresh);
    div.appendChild(box);
  });
})();
