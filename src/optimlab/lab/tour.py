"""``optimlab tour``: one self-contained HTML page that measures each claim of the seed documents.

Each section states a claim from the seeds (002 unless noted), runs the lab on it, shows a figure
and the measured numbers, and gives a verdict COMPUTED from those numbers by the rule printed
next to it: where the measurement does not bear the claim out, the page says so.

``main(out_dir)`` writes ``tour.html`` (figures embedded as base64), the figures as PNG files,
and ``tour.json`` (every number and verdict); it returns the HTML path.
"""

from __future__ import annotations

import base64
import html
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import _io, plots
from .. import catalogue
from .engine import get_optimizer, run, sweep
from .landscapes import get_landscape
from .metrics import effective_lr, measure


@dataclass
class Section:
    key: str
    title: str
    claim: str
    figures: list[tuple[str, Any]] = field(default_factory=list)  # (file name, Figure or GIF path)
    numbers: list[tuple[str, str]] = field(default_factory=list)  # (what, value)
    checks: list[tuple[str, str, bool]] = field(default_factory=list)  # (claim part, rule with numbers, holds)
    setup: str = ""

    @property
    def holds(self) -> bool:
        return all(ok for _, _, ok in self.checks)


def _steps(v: int, total: int) -> str:
    return f"{v}" if v >= 0 else f"not within {total}"


def _as_steps(v: int, total: int) -> int:
    """Steps to reach, with 'never' counted as one more than the run's length (for comparisons)."""
    return v if v >= 0 else total + 1


# --- the claims -------------------------------------------------------------------------------------

def ewma_section() -> Section:
    from ..ewma import ewma_series

    g = torch.Generator().manual_seed(2)
    t = torch.arange(1, 121, dtype=torch.float64)
    truth = 3.0 + torch.sin(t / 12.0)
    noisy = truth + 0.6 * torch.randn(len(t), generator=g, dtype=torch.float64)
    betas = [0.5, 0.9, 0.98]
    s = Section("ewma", "EWMA: smoothing and bias correction",
                "\"High beta (e.g. 0.9): more emphasis on past observations, smoother trend line\"; and because "
                "V_0 = 0 the early averages are biased, which Adam's bias correction V_t / (1 - beta^t) removes.",
                setup=f"A noisy series (a sine around 3 plus Gaussian noise, sd 0.6, {len(t)} points, seed 2); "
                      f"EWMA with beta in {betas} (optimlab.ewma_series).")
    rough = []
    for b in betas:
        avg = ewma_series(noisy, b)
        r = float((avg[1:] - avg[:-1]).std())
        rough.append(r)
        s.numbers.append((f"roughness (sd of successive differences), beta = {b}", f"{r:.4f}"))
    s.numbers.insert(0, ("roughness of the raw data", f"{float((noisy[1:] - noisy[:-1]).std()):.4f}"))
    smoother = all(a > b for a, b in zip(rough, rough[1:]))
    s.checks.append(("a higher beta gives a smoother line",
                     "roughness strictly decreases with beta: " + " > ".join(f"{r:.4f}" for r in rough), smoother))
    b = 0.9
    k = 10
    err_c = float((ewma_series(noisy, b, True)[:k] - truth[:k]).abs().mean())
    err_u = float((ewma_series(noisy, b, False)[:k] - truth[:k]).abs().mean())
    s.numbers.append((f"mean |EWMA - true signal| over the first {k} points, beta = {b}, with bias correction", f"{err_c:.4f}"))
    s.numbers.append(("... without bias correction", f"{err_u:.4f}"))
    s.checks.append(("bias correction removes the early pull towards 0",
                     f"early error with correction {err_c:.4f} < without {err_u:.4f}", err_c < err_u))
    s.figures.append(("ewma.png", plots.ewma_figure(noisy, betas, truth, "EWMA of a noisy series: left with, right without bias correction")))
    return s


RAVINE = dict(landscape="elongated_bowl", start=(-9.0, 2.0), lr=0.05, steps=300, tol=1e-4)
GRID_LRS = torch.logspace(-3, 0, 25, dtype=torch.float64)


def ravine_runs() -> tuple[dict[str, Any], Any]:
    c = RAVINE
    runs = {n: run(c["landscape"], n, [c["start"]], c["steps"], lr=c["lr"]) for n in ("sgd", "momentum", "nag")}
    grid = sweep(c["landscape"], ["sgd", "momentum", "nag"], GRID_LRS, [c["start"]], c["steps"])
    return runs, grid


def momentum_section(runs, grid) -> Section:
    c = RAVINE
    land = get_landscape(c["landscape"])
    s = Section("momentum", "Momentum on a ravine: faster than plain gradient descent, but it oscillates",
                "\"Momentum ... accelerates convergence\" in \"steep, narrow valleys\"; and \"when momentum builds up, "
                "it can overshoot the optimum ... oscillates around the minimum before settling\".",
                setup=f"{land.name} ({land.formula}, condition number 100), start {c['start']}, {c['steps']} steps, "
                      f"tolerance f - f* <= {c['tol']:g}; momentum 0.9 (torch form). Figure: lr = {c['lr']} for both; "
                      f"speed is also compared at each one's best of {len(GRID_LRS)} learning rates in 1e-3..1.")
    m = {n: measure(r, c["tol"]) for n, r in runs.items()}
    hit = {n: int(v["steps_to_tol"][0]) for n, v in m.items()}
    osc = {n: int(v["oscillation"][0]) for n, v in m.items()}
    best = {}
    for n in ("sgd", "momentum"):
        st = measure(grid.runs[n], c["tol"])["steps_to_tol"]
        st = torch.where(st >= 0, st, torch.full_like(st, c["steps"] + 1))
        i = int(st.argmin())
        best[n] = (int(st[i]), float(GRID_LRS[i]))
    for n in ("sgd", "momentum"):
        s.numbers.append((f"{get_optimizer(n).label}: steps to tolerance at lr {c['lr']}", _steps(hit[n], c["steps"])))
    for n in ("sgd", "momentum"):
        b, lr = best[n]
        s.numbers.append((f"{get_optimizer(n).label}: fewest steps to tolerance over the lr grid", f"{_steps(b if b <= c['steps'] else -1, c['steps'])} (lr {lr:.3g})"))
    for n in ("sgd", "momentum"):
        s.numbers.append((f"{get_optimizer(n).label}: sign changes of the step along its principal axis", str(osc[n])))
    s.checks.append(("momentum is faster (at the same lr)",
                     f"steps {_steps(hit['momentum'], c['steps'])} < {_steps(hit['sgd'], c['steps'])}",
                     _as_steps(hit["momentum"], c["steps"]) < _as_steps(hit["sgd"], c["steps"])))
    s.checks.append(("momentum is faster (each at its best lr)", f"steps {best['momentum'][0]} < {best['sgd'][0]}",
                     best["momentum"][0] < best["sgd"][0]))
    s.checks.append(("momentum oscillates (more than GD)", f"sign changes {osc['momentum']} > {osc['sgd']}",
                     osc["momentum"] > osc["sgd"]))
    paths = {f"{get_optimizer(n).label} (lr {c['lr']})": runs[n].path[:, 0] for n in ("sgd", "momentum")}
    colors = dict(zip(paths, [catalogue.colour("sgd"), catalogue.colour("momentum")]))
    s.figures.append(("ravine_momentum.png", plots.contour(land, paths, f"{land.name}: GD vs Momentum, same lr", colors)))
    s.figures.append(("ravine_loss.png", plots.loss_curves({k: runs[n].loss[:, 0] for k, n in zip(paths, ("sgd", "momentum"))},
                                                           0.0, f"{land.name}: loss vs step", colors)))
    return s


def nag_section(runs, grid) -> Section:
    c = RAVINE
    land = get_landscape(c["landscape"])
    s = Section("nag", "NAG oscillates less than Momentum",
                "NAG: \"look_ahead = w_t - beta v_(t-1), v_t = beta v_(t-1) + eta grad J(look_ahead)\" ... "
                "\"smoother convergence with reduced oscillations\".",
                setup=f"Same ravine and start; momentum 0.9; NAG in the seed's look-ahead form (gradient at w - beta v). "
                      f"Oscillation = sign changes of the step along the trajectory's principal axis; compared at "
                      f"lr = {c['lr']} and at every lr of the grid where neither diverges.")
    osc = {n: int(measure(runs[n])["oscillation"][0]) for n in ("momentum", "nag")}
    gm = {n: measure(grid.runs[n]) for n in ("momentum", "nag")}
    both = ~gm["momentum"]["diverged"] & ~gm["nag"]["diverged"]
    fewer = (gm["nag"]["oscillation"] < gm["momentum"]["oscillation"]) & both
    n_both, n_fewer = int(both.sum()), int(fewer.sum())
    s.numbers += [(f"Momentum: sign changes at lr {c['lr']}", str(osc["momentum"])),
                  (f"NAG: sign changes at lr {c['lr']}", str(osc["nag"])),
                  ("learning rates (of the grid) where neither diverges", str(n_both)),
                  ("... of which NAG has fewer sign changes", str(n_fewer)),
                  ("Momentum diverges from lr", _first_lr(gm["momentum"]["diverged"])),
                  ("NAG diverges from lr", _first_lr(gm["nag"]["diverged"]))]
    s.checks.append((f"NAG oscillates less at lr {c['lr']}", f"{osc['nag']} < {osc['momentum']}", osc["nag"] < osc["momentum"]))
    s.checks.append(("NAG oscillates less at most learning rates", f"{n_fewer} of {n_both} > half", n_both > 0 and n_fewer > n_both / 2))
    paths = {f"{get_optimizer(n).label} (lr {c['lr']})": runs[n].path[:, 0] for n in ("momentum", "nag")}
    colors = dict(zip(paths, [catalogue.colour("momentum"), catalogue.colour("nag")]))
    s.figures.append(("ravine_nag.png", plots.contour(land, paths, f"{land.name}: Momentum vs NAG, same lr and beta", colors)))
    return s


def _first_lr(diverged: torch.Tensor) -> str:
    idx = torch.nonzero(diverged).flatten()
    return f"{float(GRID_LRS[idx[0]]):.3g}" if len(idx) else "never (on the grid)"


def local_minimum_section() -> Section:
    land = get_landscape("shallow_deep")
    xs = torch.linspace(1.3, 2.4, 6, dtype=torch.float64)
    ys = torch.linspace(-1.2, 1.2, 5, dtype=torch.float64)
    starts = torch.cartesian_prod(xs, ys)
    lr, steps = 0.01, 800
    names = ("sgd", "momentum", "nag", "adam")
    s = Section("local_minimum", "Momentum can carry past a shallow local minimum",
                "\"A ball with momentum can roll through small bumps and valleys. It can escape local minima due to "
                "accumulated velocity\"; NAG: \"may struggle with shallow local minima\".",
                setup=f"{land.name} ({land.formula}): a shallow minimum at x = {land.minima[1][0]:.3f} beside the deep one at "
                      f"x = {land.minima[0][0]:.3f}. {len(starts)} starts on a grid on the shallow side "
                      f"(x in 1.3..2.4, y in -1.2..1.2), lr {lr}, {steps} steps, momentum 0.9.")
    frac, reached = {}, {}
    for n in names:
        r = run(land, n, starts, steps, lr=lr)
        m = measure(r)
        deep = (m["nearest_minimum"] == 0) & ~m["diverged"] & (m["distance_to_minimum"] < 0.1)
        frac[n] = float(deep.double().mean())
        reached[n] = (r, deep)
        s.numbers.append((f"{get_optimizer(n).label}: fraction of starts ending in the deep (global) minimum", f"{frac[n]:.2f}"))
    s.checks.append(("momentum sometimes reaches the deep minimum where GD does not",
                     f"momentum {frac['momentum']:.2f} > GD {frac['sgd']:.2f}", frac["momentum"] > frac["sgd"]))
    s.checks.append(("(seed) NAG escapes less often than momentum", f"NAG {frac['nag']:.2f} < momentum {frac['momentum']:.2f}",
                     frac["nag"] < frac["momentum"]))
    # the figure shows one start where momentum and GD end in different minima, if there is one
    differ = torch.nonzero(reached["momentum"][1] & ~reached["sgd"][1]).flatten()
    j = int(differ[0]) if len(differ) else 0
    paths = {get_optimizer(n).label: reached[n][0].path[:, j] for n in names}
    colors = dict(zip(paths, [catalogue.colour(n) for n in names]))
    pt = starts[j].tolist()
    s.figures.append(("local_minimum.png", plots.contour(
        land, paths, f"{land.name}: from ({pt[0]:.2f}, {pt[1]:.2f}), lr {lr}" +
        (" (a start where Momentum and GD end apart)" if len(differ) else ""), colors)))
    return s


def saddle_section() -> Section:
    land = get_landscape("saddle")
    start, lr, steps = (2.0, 1e-3), 0.01, 600
    names = ("sgd", "momentum", "nag", "rmsprop", "adam")
    s = Section("saddle", "Plain gradient descent stalls near a saddle point",
                "\"Saddle points: flat regions where gradient is zero in some directions but not others. "
                "Basic Gradient Descent becomes 'stuck' despite nearby lower points.\"",
                setup=f"{land.name} ({land.formula}), start {start} (just off the saddle's attracting line), lr {lr}, "
                      f"{steps} steps. Escaped = the loss fell 1 below the saddle's value (f = 0).")
    runs = {n: run(land, n, [start], steps, lr=lr) for n in names}
    esc = {}
    for n, r in runs.items():
        m = measure(r)
        esc[n] = int(m["steps_to_escape"][0])
        near = (torch.linalg.vector_norm(r.path[:, 0], dim=-1) < 0.5).sum()
        s.numbers.append((f"{get_optimizer(n).label}: steps to escape", _steps(esc[n], steps)))
        s.numbers.append((f"{get_optimizer(n).label}: steps spent within 0.5 of the saddle", str(int(near))))
    slowest = all(_as_steps(esc["sgd"], steps) > _as_steps(esc[n], steps) for n in names if n != "sgd")
    s.checks.append(("GD takes longest to escape", "GD's steps to escape exceed every other optimizer's: " +
                     ", ".join(f"{n} {_steps(esc[n], steps)}" for n in names), slowest))
    paths = {get_optimizer(n).label: runs[n].path[:, 0] for n in names}
    colors = dict(zip(paths, [catalogue.colour(n) for n in names]))
    s.figures.append(("saddle.png", plots.contour(land, paths, f"{land.name}: leaving the saddle at (0, 0)", colors)))
    s.figures.append(("saddle_loss.png", plots.loss_curves({k: runs[n].loss[:, 0] + 9.0 for k, n in zip(paths, names)}, 0.0,
                                                           f"{land.name}: loss vs step (shifted: f + 9, so the saddle is at 9, minima at 1)",
                                                           colors, ylabel="f(w_t) + 9")))
    return s


def adagrad_section() -> Section:
    land = get_landscape("elongated_bowl")
    start, lr, steps = (-9.0, 2.0), 0.1, 500
    s = Section("adagrad", "AdaGrad's step vanishes; RMSProp's does not",
                "AdaGrad: \"As V_t -> infinity, eta / sqrt(V_t + eps) -> 0, causing the learning rate to vanish\"; "
                "RMSProp: \"V_t no longer explodes - keeping the effective learning rate stable\".",
                setup=f"{land.name}, start {start}, lr {lr} for both, {steps} steps. Effective learning rate = "
                      "|step| / |gradient| per coordinate, measured from the run (the geometric mean of x and y is compared).")
    runs = {n: run(land, n, [start], steps, lr=lr, record_grads=True) for n in ("adagrad", "rmsprop")}
    eff, ratio, final = {}, {}, {}
    for n, r in runs.items():
        e = effective_lr(r.path, r.grads)[:, 0]
        eff[get_optimizer(n).label] = e
        gm = e.log().mean(dim=-1).exp()
        finite = gm[torch.isfinite(gm)]
        ratio[n] = float(finite[-1] / finite[0])
        final[n] = float(r.loss[-1, 0])
        s.numbers.append((f"{get_optimizer(n).label}: effective lr, last / first step", f"{ratio[n]:.3g}"))
        s.numbers.append((f"{get_optimizer(n).label}: final loss", f"{final[n]:.3g}"))
    s.checks.append(("AdaGrad's effective step shrinks a lot", f"last/first {ratio['adagrad']:.3g} < 0.2", ratio["adagrad"] < 0.2))
    s.checks.append(("RMSProp's does not vanish", f"last/first {ratio['rmsprop']:.3g} >= 0.5", ratio["rmsprop"] >= 0.5))
    s.figures.append(("effective_lr.png", plots.effective_lr(eff, f"{land.name}: effective per-parameter learning rate, lr {lr}",
                                                             colors={get_optimizer("adagrad").label: catalogue.colour("adagrad"),
                                                                     get_optimizer("rmsprop").label: catalogue.colour("rmsprop")})))
    return s


def adam_bias_section() -> Section:
    from ..algorithms import RULES

    land = get_landscape("rosenbrock")
    start, lr, steps = (-1.2, 1.0), 1e-3, 60
    s = Section("adam_bias", "Adam's bias correction matters in the first steps",
                "\"Early in training, these moments are biased, so Adam includes a bias-correction step\" (seed 000); "
                "seed 001's worked example has no correction: weight 0.5, lr 0.001, grad 0.2 -> 0.49684.",
                setup=f"{land.name}, start {start}, lr {lr}, betas (0.9, 0.999), {steps} steps: Adam with and without "
                      "bias correction. Step length |w_t - w_(t-1)| against t.")
    runs = {n: run(land, n, [start], steps, lr=lr) for n in ("adam", "adam-nobc")}
    lengths = {n: torch.linalg.vector_norm(r.path[1:, 0] - r.path[:-1, 0], dim=-1) for n, r in runs.items()}
    r1 = float(lengths["adam-nobc"][0] / lengths["adam"][0])
    r10 = float(lengths["adam-nobc"][:10].sum() / lengths["adam"][:10].sum())
    rlast = float(lengths["adam-nobc"][-10:].sum() / lengths["adam"][-10:].sum())
    w = {}
    for bc in (False, True):  # the core's Adam rule (what optimlab.Adam calls), on the seed's numbers
        zero = torch.zeros(1, dtype=torch.float64)
        out = RULES["adam"].update(torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64),
                                   zero, zero, step=1.0, lr=1e-3, bias_correction=bc)
        w[bc] = float(out["param"])
    s.numbers += [("first step length, without / with bias correction", f"{r1:.3f}"),
                  ("path length over steps 1-10, without / with", f"{r10:.3f}"),
                  (f"path length over steps {steps - 9}-{steps}, without / with", f"{rlast:.3f}"),
                  ("seed 001's example (w 0.5, grad 0.2, lr 0.001), one step of the core Adam rule without correction", f"{w[False]:.5f}"),
                  ("... with bias correction", f"{w[True]:.5f}")]
    s.checks.append(("the first steps differ by more than 20%", f"steps 1-10 ratio {r10:.3f} outside [0.8, 1.25]",
                     not 0.8 <= r10 <= 1.25))
    s.checks.append(("the difference fades later", f"|late ratio - 1| = {abs(rlast - 1):.3f} < |early ratio - 1| = {abs(r10 - 1):.3f}",
                     abs(rlast - 1) < abs(r10 - 1)))
    fig = plots.loss_curves({get_optimizer(n).label: lengths[n] for n in runs}, 0.0,
                            f"{land.name}: Adam step length with and without bias correction, lr {lr}",
                            colors={get_optimizer("adam").label: catalogue.colour("adam"),
                                    get_optimizer("adam-nobc").label: catalogue.colour("momentum")},
                            ylabel="step length |w_t - w_(t-1)|", first_step=1)
    s.figures.append(("adam_bias.png", fig))
    return s


def lr_section() -> Section:
    land = get_landscape("rosenbrock")
    g = torch.Generator().manual_seed(0)
    starts = torch.stack([torch.rand(40, generator=g, dtype=torch.float64) * 3 - 1.5,
                          torch.rand(40, generator=g, dtype=torch.float64) * 2.5 - 0.5], dim=1)
    lrs = torch.logspace(-6, -1, 16, dtype=torch.float64)
    steps = 300
    names = ["sgd", "momentum", "adam"]
    s = Section("learning_rate", "Too high a learning rate diverges, too low crawls",
                "\"Too High: can cause overshooting the minimum and unstable training (loss increases). "
                "Too Low: can lead to very slow convergence.\" (seed 000)",
                setup=f"{land.name}, {len(starts)} random starts, {len(lrs)} learning rates 1e-6..0.1, {steps} steps, "
                      f"{', '.join(names)}: one batched run per optimizer ({len(starts) * len(lrs)} trajectories each).")
    res = sweep(land, names, lrs, starts, steps)
    final, div = {}, {}
    for n in names:
        m = measure(res.runs[n])
        dv = res.grid(n, m["diverged"])
        gap = res.grid(n, m["loss_gap"])
        init = res.grid(n, res.runs[n].loss[0] - land.min_value)
        final[get_optimizer(n).label] = torch.where(dv, torch.nan, gap).nanmedian(dim=1).values
        div[get_optimizer(n).label] = dv.double().mean(dim=1) > 0.5
        if n == "sgd":
            frac_div_top = float(dv[-1].double().mean())
            remain_low = float((gap[0] / init[0]).median())
            left = torch.where(dv, torch.nan, gap / init).nanmedian(dim=1).values  # per lr
            best_remain = float(left[~torch.isnan(left)].min())
    s.numbers += [(f"GD at the highest lr ({float(lrs[-1]):.2g}): fraction of starts that diverged", f"{frac_div_top:.2f}"),
                  (f"GD at the lowest lr ({float(lrs[0]):.2g}): median fraction of the initial loss gap left", f"{remain_low:.3f}"),
                  ("GD at its best lr: median fraction left", f"{best_remain:.2e}")]
    s.checks.append(("too high diverges", f"{frac_div_top:.2f} of starts diverge at lr {float(lrs[-1]):.2g} (rule: >= 0.5)", frac_div_top >= 0.5))
    s.checks.append(("too low crawls", f"{remain_low:.3f} of the gap left at lr {float(lrs[0]):.2g} (rule: >= 0.5, while the best lr leaves {best_remain:.2e})",
                     remain_low >= 0.5 and best_remain < 0.1))
    s.figures.append(("lr_sweep.png", plots.lr_sweep(lrs, final, div, f"{land.name}: final loss vs learning rate ({len(starts)} starts, {steps} steps)",
                                                     colors={get_optimizer(n).label: catalogue.colour(n) for n in names})))
    return s


def schedule_section() -> Section:
    land = get_landscape("rosenbrock")
    g = torch.Generator().manual_seed(1)
    starts = torch.stack([torch.rand(40, generator=g, dtype=torch.float64) * 3 - 1.5,
                          torch.rand(40, generator=g, dtype=torch.float64) * 2.5 - 0.5], dim=1)
    steps = 500
    setups = {"rmsprop": 0.03, "adam": 0.1}
    s = Section("schedule", "A decaying learning rate fine-tunes the solution",
                "\"Using learning rate schedulers (like ReduceLROnPlateau or cosine decay) to decrease it as training "
                "progresses, helping fine-tune the solution.\" (seed 000)",
                setup=f"{land.name}, {len(starts)} random starts, {steps} steps; constant learning rate vs cosine decay "
                      "to 0 (torch's CosineAnnealingLR) from the same initial rate: " +
                      ", ".join(f"{get_optimizer(n).label} lr {lr}" for n, lr in setups.items()) +
                      ". Compared: the median final loss over the starts.")
    curves = {}
    for n, lr in setups.items():
        med = {}
        for sched in (None, "cosine"):
            r = run(land, n, starts, steps, lr=lr, schedule=sched)
            m = measure(r)
            med[sched] = float(m["loss_gap"].median())
            label = f"{get_optimizer(n).label}, {'cosine decay' if sched else 'constant'}"
            curves[label] = r.loss.median(dim=1).values
            s.numbers.append((f"{label}: median final f - f*", f"{med[sched]:.3g}"))
        s.checks.append((f"cosine decay ends lower for {get_optimizer(n).label}",
                         f"{med['cosine']:.3g} < {med[None]:.3g}", med["cosine"] < med[None]))
    colors = {k: catalogue.colour(n) for k, n in zip(curves, [n for n in setups for _ in range(2)])}
    styles = {k: ("--" if "cosine" in k else "-") for k in curves}
    fig = plots.loss_curves(curves, 0.0, f"{land.name}: median loss over {len(starts)} starts, constant (solid) vs "
                            "cosine-decayed (dashed) lr", colors, ylabel="median f(w_t) - f*", styles=styles)
    s.figures.append(("schedule.png", fig))
    return s


def basins_section() -> Section:
    land = get_landscape("himmelblau")
    n_grid, steps = 31, 200
    (x0, x1), (y0, y1) = land.window
    xs = torch.linspace(x0, x1, n_grid, dtype=torch.float64)
    ys = torch.linspace(y0, y1, n_grid, dtype=torch.float64)
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    starts = torch.stack([X.flatten(), Y.flatten()], dim=1)
    names = {"sgd": 0.005, "momentum": 0.002, "adam": 0.1}
    s = Section("basins", "Which minimum a start reaches depends on the optimizer (Himmelblau's four minima)",
                "\"Loss landscapes contain multiple pits\" - the same start can end in a different pit with a different optimizer.",
                setup=f"{land.name}: {len(starts)} starts on a {n_grid} x {n_grid} grid, {steps} steps, "
                      + ", ".join(f"{n} lr {lr}" for n, lr in names.items()) + ".")
    reached = {}
    for n, lr in names.items():
        m = measure(run(land, n, starts, steps, lr=lr))
        idx = torch.where(m["diverged"] | (m["distance_to_minimum"] > 0.5), -1, m["nearest_minimum"])
        reached[f"{get_optimizer(n).label} (lr {lr})"] = idx
    keys = list(reached)
    same = float((reached[keys[0]] == reached[keys[1]]).double().mean())
    same2 = float((reached[keys[0]] == reached[keys[2]]).double().mean())
    s.numbers += [(f"starts where {keys[0]} and {keys[1]} end in the same minimum", f"{same:.2f}"),
                  (f"starts where {keys[0]} and {keys[2]} end in the same minimum", f"{same2:.2f}")]
    s.checks.append(("the basins differ between optimizers", f"agreement {same:.2f} and {same2:.2f}, both < 1", same < 1 and same2 < 1))
    s.figures.append(("basins.png", plots.basin_map(land, reached, xs, ys)))
    return s


# --- the page -------------------------------------------------------------------------------------

def _embed(name: str, fig: Any, out: Path) -> str:
    if isinstance(fig, (str, Path)):
        data, mime = Path(fig).read_bytes(), "image/gif"
    else:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        data, mime = buf.getvalue(), "image/png"
        _io.atomic_write(out / name, lambda tmp: Path(tmp).write_bytes(data))
    return f'<img alt="{html.escape(name)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'


CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} section{border-top:2px solid #ddd;margin-top:2em;padding-top:1em}
blockquote{border-left:4px solid #56B4E9;margin:0;padding:.3em 1em;background:#f4f9fc}
img{max-width:100%;display:block;margin:1em auto} table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.92em}
.holds{color:#fff;background:#009E73;padding:.1em .5em;border-radius:4px}
.fails{color:#fff;background:#D55E00;padding:.1em .5em;border-radius:4px} .setup{color:#555;font-size:.93em}"""


def render(sections: list[Section], out: Path, seconds: float) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>optimlab tour</title><style>{CSS}</style></head><body>",
             "<h1>optimlab tour: the seeds' claims, measured</h1>",
             f"<p>Each section runs the lab's batched engine (the core's update rules, called on thousands of "
             f"2-D trajectories at once) and decides each claim by the rule shown next to it, from the numbers of this run. "
             f"Built in {seconds:.1f} s with torch {html.escape(torch.__version__)}.</p><ul>"]
    for s in sections:
        badge = "holds" if s.holds else "does not fully hold"
        parts.append(f"<li><a href='#{s.key}'>{html.escape(s.title)}</a>: <span class='{'holds' if s.holds else 'fails'}'>{badge}</span></li>")
    parts.append("</ul>")
    for s in sections:
        parts.append(f"<section id='{s.key}'><h2>{html.escape(s.title)}</h2><blockquote>{html.escape(s.claim)}</blockquote>")
        parts.append(f"<p class='setup'>{html.escape(s.setup)}</p>")
        for name, fig in s.figures:
            parts.append(_embed(name, fig, out))
        parts.append("<table><tr><th>measured</th><th>value</th></tr>")
        parts += [f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in s.numbers]
        parts.append("</table><table><tr><th>claim</th><th>rule, with this run's numbers</th><th>verdict</th></tr>")
        for claim, rule, ok in s.checks:
            verdict = "<span class='holds'>holds</span>" if ok else "<span class='fails'>does not hold here</span>"
            parts.append(f"<tr><td>{html.escape(claim)}</td><td>{html.escape(rule)}</td><td>{verdict}</td></tr>")
        parts.append("</table></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build(gif: bool = True) -> list[Section]:
    """Compute every section (no files written)."""
    ravine, grid = ravine_runs()
    sections = [ewma_section(), momentum_section(ravine, grid), nag_section(ravine, grid), local_minimum_section(),
                saddle_section(), adagrad_section(), adam_bias_section(), lr_section(), schedule_section(),
                basins_section()]
    if gif:
        sections[2].figures.append(("ravine_nag.gif", ravine))  # marker, rendered in main()
    return sections


def main(out_dir: str | Path = "out/tour", gif: bool = True) -> Path:
    """Build the tour into ``out_dir``; returns the path of ``tour.html``."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    sections = build(gif)
    for s in sections:
        for i, (name, fig) in enumerate(s.figures):
            if name.endswith(".gif"):
                c = RAVINE
                paths = {get_optimizer(n).label: fig[n].path[:, 0] for n in ("momentum", "nag")}
                s.figures[i] = (name, plots.animate(c["landscape"], paths, str(out / name), frames=30,
                                                    title="Momentum vs NAG"))
    page = render(sections, out, time.perf_counter() - t0)
    _io.write_json(out / "tour.json", [{"key": s.key, "title": s.title, "numbers": dict(s.numbers),
                                        "checks": [{"claim": c, "rule": r, "holds": ok} for c, r, ok in s.checks]}
                                       for s in sections])
    return _io.write_text(out / "tour.html", page)


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "out/tour"))
