"""``optimlab tour``: every claim of the seed documents, measured as a hypothesis with an interval.

Sections (modules): :mod:`.basics` (EWMA, batch / mini-batch / stochastic GD, the learning rate,
decay under noise), :mod:`.momentum` (high curvature, the ravine, beta, noisy gradients, local
minima, saddle points, NAG), :mod:`.adaptive` (AdaGrad, RMSProp, Adam, Nadam), :mod:`.tasks`
(real-task claims and the Keras table). The verdict method is :mod:`optimlab.lab.verdicts`; the
figures are :mod:`.figures`; the page is :mod:`.page`; the "try it" links are
:func:`.core.try_it_url`.

``main(out_dir)`` writes ``tour.html`` (figures embedded), the figures as PNG files, a GIF and
``tour.json`` (per claim: hypothesis, metric, population, n, effect, interval, verdict); it returns
the HTML path. Everything is seeded: two builds give the same ``tour.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import _io
from . import adaptive, basics, momentum, tasks
from .core import Section, try_it_url
from .page import coverage_markdown, render

__all__ = ["Section", "build", "main", "try_it_url"]


def build(full: bool = False, real_tasks: bool = True) -> list[Section]:
    """Compute every section (no files written). ``full`` runs the larger real-task plan;
    ``real_tasks=False`` leaves the real-task section out (for quick checks of the lab claims)."""
    sw = momentum.ravine_sweep()
    sections = [basics.ewma_section(), basics.variants_section(), basics.lr_section(), basics.schedule_section(),
                momentum.curvature_section(), momentum.momentum_section(sw), momentum.beta_section(sw),
                momentum.noise_section(), momentum.local_minimum_section(), momentum.saddle_section(),
                momentum.nag_section(sw), adaptive.adagrad_section(), adaptive.vanishing_section(),
                adaptive.rmsprop_section(), adaptive.adam_step_section(), adaptive.adam_bias_section(),
                adaptive.nadam_section()]
    if real_tasks:
        sections.append(tasks.tasks_section(tasks.FULL if full else tasks.REDUCED))
    sections.append(tasks.keras_section())
    return sections


def summary(sections: list[Section], plan: str) -> dict:
    """What ``tour.json`` holds."""
    return {"plan": plan, "sections": [s.to_json() for s in sections]}


def main(out_dir: str | Path = "out/tour", gif: bool = True, full: bool = False, real_tasks: bool = True,
         draw: bool = True) -> Path:
    """Build the tour into ``out_dir``; returns the path of ``tour.html``. ``draw=False`` computes
    every number but draws no figure (a quick check)."""
    from contextlib import nullcontext

    from . import figures

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with nullcontext() if draw else figures.disabled():
        sections = build(full, real_tasks)
    if gif and draw:
        for s in sections:
            if s.gif is not None:
                name, land, paths, colours = s.gif
                s.figures.append((name, figures.animate(land, paths, colours, str(out / name), s.title.split(':')[0])))
    plan = "full" if full else "reduced" if real_tasks else "none"
    page = render(sections, out, time.perf_counter() - t0, plan)
    data = summary(sections, plan)
    _io.write_json(out / "tour.json", data)
    _io.write_text(out / "coverage.md", coverage_markdown(data))
    return _io.write_text(out / "tour.html", page)


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "out/tour"))
