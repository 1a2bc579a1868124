"""Sections on the basics: the EWMA, the three gradient-descent variants (on real data sub-samples),
the learning rate (too high / too low) and learning-rate decay under noisy gradients."""

from __future__ import annotations

import numpy as np
import torch

from ...ewma import EWMA
from ..engine import run
from ..landscapes import get_landscape
from ..metrics import measure
from ..verdicts import exact_claim, paired_claim, proportion_claim, where_holds
from . import figures as F
from .core import Section, colour, label, random_starts, try_it_url
from .momentum import settings_run

SEED2, SEED0 = "002_93c688692edab2f7.txt", "000_f06fc82abbd9c8ce.txt"


def _ewma_all(x: torch.Tensor, beta: float, bias_correction: bool) -> torch.Tensor:
    """optimlab's EWMA run over every series at once: ``x`` ``(T, M)`` -> ``(T, M)``."""
    avg = EWMA(beta, bias_correction)
    return torch.stack([avg.update(row) for row in x])


def ewma_section() -> Section:
    betas = np.array([0.1, 0.5, 0.8, 0.9, 0.95, 0.99])
    T = 400
    impulse = torch.zeros(T, len(betas), dtype=torch.float64)
    impulse[0] = 1.0
    weights = torch.stack([_ewma_all(impulse[:, i:i + 1], float(b), False)[:, 0] for i, b in enumerate(betas)], 1)
    # weights[k, i]: the weight V_k gives to theta_1, i.e. the weight of a value k steps back
    k = np.arange(T)[:, None]
    formula = (1 - betas) * betas ** k
    err = float(np.abs(weights.numpy() - formula).max())
    s = Section("ewma", "The exponentially weighted moving average", SEED2,
                "Current data point theta_t has weight (1 - beta); previous data point theta_(t-1) has weight "
                "beta (1 - beta) ... beta determines the effective averaging window: 1/(1 - beta). With beta = 0.9, "
                "approximately 10 past gradients contribute significantly ... Higher beta values result in smoother "
                "trend lines.",
                f"The weights: optimlab's EWMA fed a unit impulse, for beta in {betas.tolist()}, {T} steps. The window: "
                "the fewest recent values that hold 1 - 1/e (63%) of the weight. Smoothness and bias correction: "
                "200 noisy series (a sine plus Gaussian noise, sd 0.6, 120 points, numpy seed 2).")
    s.claims.append(exact_claim(
        "ewma.weights", err, threshold=1e-12, direction="<", n=len(betas),
        hypothesis="the value k steps back has weight (1 - beta) beta^k", metric="max |weight - (1 - beta) beta^k| "
        f"over k < {T}", population=f"beta in {betas.tolist()}"))
    cum = np.cumsum(weights.numpy(), axis=0)
    window = (cum < 1 - np.exp(-1)).sum(0) + 1
    s.claims.append(exact_claim(
        "ewma.window", float(np.max(np.abs(window - 1 / (1 - betas)))), threshold=1.0, direction="<", n=len(betas),
        hypothesis="the number of recent values holding 63% of the weight is 1/(1 - beta) to within one value",
        metric="max over beta of |window - 1/(1 - beta)|", population=f"beta in {betas.tolist()}",
        details={"window": dict(zip(map(str, betas.tolist()), window.tolist()))}))
    rng = np.random.default_rng(2)
    t = np.arange(1, 121)
    truth = 3.0 + np.sin(t / 12.0)
    noisy = torch.from_numpy(truth[:, None] + 0.6 * rng.standard_normal((120, 200)))
    rough = {b: torch.diff(_ewma_all(noisy, b, True), dim=0).std(0).numpy() for b in (0.5, 0.9)}
    s.claims.append(paired_claim(
        "ewma.smoother", np.log10(rough[0.5]), np.log10(rough[0.9]), hypothesis="beta 0.9 gives a smoother line than 0.5",
        metric="log10 roughness (sd of successive differences), beta 0.5 - beta 0.9", population="200 noisy series"))
    tr = torch.from_numpy(truth[:10, None])
    errs = {bc: (_ewma_all(noisy, 0.9, bc)[:10] - tr).abs().mean(0).numpy() for bc in (True, False)}
    s.claims.append(paired_claim(
        "ewma.bias_correction", errs[False], errs[True], hypothesis="bias correction V_t / (1 - beta^t) brings the first "
        "10 averages closer to the true signal", metric="mean |EWMA - truth| over t = 1..10, without - with",
        population="200 noisy series"))
    fig = F.lines({f"beta = {b}": np.arange(0, 40) for b in betas[1:5]},
                  {f"beta = {b}": weights.numpy()[:40, i + 1] for i, b in enumerate(betas[1:5])},
                  dict(zip([f"beta = {b}" for b in betas[1:5]], ["#E69F00", "#56B4E9", "#009E73", "#0072B2"])),
                  "EWMA weights of past values (from optimlab's EWMA fed a unit impulse)", "steps back (k)",
                  "weight of theta_(t-k)")
    s.figures.append(("ewma_weights.png", fig))
    from .. import plots

    s.figures.append(("ewma.png", F.figure(plots.ewma_figure)(noisy[:, 0], [0.5, 0.9, 0.98], torch.from_numpy(truth),
                                                    "EWMA of one noisy series: left with, right without bias correction")))
    return s


def variants_section() -> Section:
    land = get_landscape("least_squares")
    N = land.n_data
    starts = random_starts(100, ((-3.0, 4.0), (-4.0, 3.0)), 31)
    S = starts.shape[0]
    epochs = 3
    variants = {"batch": N, "mini-batch (10)": 10, "stochastic (1)": 1}
    lrs = np.array([0.01, 0.03, 0.1, 0.3])
    f_star = land.min_value
    res = {}
    for name, b in variants.items():
        steps = epochs * N // b
        r = settings_run(land, "sgd", starts, steps, lrs, noise=f"batch={b},seed=7")
        gap = np.log10(np.maximum(r.loss[-1].numpy() - f_star, 1e-16)).reshape(len(lrs), S)
        up = (np.diff(r.loss.numpy(), axis=0) > 0).mean(0).reshape(len(lrs), S)
        res[name] = {"gap": gap, "up": up, "run": r, "steps": steps}
    s = Section("variants", "Batch, stochastic and mini-batch gradient descent", SEED2,
                "Batch Gradient Descent: Uses entire dataset for one update - Slow but stable. Stochastic Gradient "
                "Descent: Updates weights after every data point - Many updates, potentially noisy. Mini-Batch: Updates "
                "weights after small batches - Most common, balanced approach.",
                f"{land.name} ({land.formula}): every gradient is computed from real examples - all {N} (batch), 10 "
                f"(mini-batch) or 1 (stochastic), drawn without replacement, a fresh permutation per epoch (noise "
                f"batch=B,seed=7). The same budget of {epochs} passes over the data ({epochs * N} example-gradients): "
                f"{epochs} batch steps, {epochs * N // 10} mini-batch steps, {epochs * N} stochastic steps. {S} random "
                f"starts x lr {lrs.tolist()}. Noisy = the fraction of steps where the full loss goes UP.")
    g = {k: v["gap"] for k, v in res.items()}
    u = {k: v["up"] for k, v in res.items()}
    pop = f"{len(lrs)} lrs x {S} starts"
    s.claims.append(paired_claim(
        "variants.batch_slow", g["batch"].ravel(), g["stochastic (1)"].ravel(), hypothesis="for the same number of "
        "examples processed, batch GD is further from the minimum than stochastic GD (slow)",
        metric="log10(f - f*) after 3 epochs, batch - stochastic", population=pop,
        where=where_holds(g["batch"].mean(1) - g["stochastic (1)"].mean(1)) | {"over": "lrs"}))
    s.claims.append(paired_claim(
        "variants.stochastic_noisy", u["stochastic (1)"].ravel(), u["batch"].ravel(), hypothesis="stochastic GD's loss "
        "goes up on more steps than batch GD's (noisy vs stable)", metric="fraction of steps where f rises, "
        "stochastic - batch", population=pop))
    s.claims.append(paired_claim(
        "variants.minibatch_balanced_speed", g["batch"].ravel(), g["mini-batch (10)"].ravel(),
        hypothesis="mini-batch GD is faster than batch GD for the same examples", metric="log10(f - f*) after 3 "
        "epochs, batch - mini-batch", population=pop))
    s.claims.append(paired_claim(
        "variants.minibatch_balanced_noise", u["stochastic (1)"].ravel(), u["mini-batch (10)"].ravel(),
        hypothesis="mini-batch GD is less noisy than stochastic GD", metric="fraction of steps where f rises, "
        "stochastic - mini-batch", population=pop))
    j, li = 0, 2
    paths = {f"{k} (lr {lrs[li]})": v["run"].path[:, li * S + j] for k, v in res.items()}
    cols = dict(zip(paths, ["#000000", "#009E73", "#D55E00"]))
    s.figures.append(("variants_paths.png", F.contour(land, paths, cols, f"{land.name}: 3 epochs of each variant, lr {lrs[li]}")))
    curves = {}
    for k, v in res.items():
        loss = v["run"].loss[:, li * S:(li + 1) * S].numpy() - f_star
        curves[k] = (np.linspace(0, epochs, v["steps"] + 1), np.median(loss, 1))
    s.figures.append(("variants_loss.png", F.lines(
        {k: c[0] for k, c in curves.items()}, {k: c[1] for k, c in curves.items()},
        dict(zip(curves, ["#000000", "#009E73", "#D55E00"])), f"{land.name}: median f - f* vs epochs (lr {lrs[li]})",
        "epochs (passes over the data)", "median f - f*", logy=True)))
    s.links.append(("stochastic GD (one example per step)", try_it_url(
        land.name, {"sgd": {"lr": float(lrs[li])}}, start=starts[j].tolist(), steps=600, noise="batch=1,seed=7")))
    s.links.append(("batch GD", try_it_url(land.name, {"sgd": {"lr": float(lrs[li])}}, start=starts[j].tolist(), steps=3)))
    return s


def lr_section() -> Section:
    land = get_landscape("rosenbrock")
    starts = random_starts(100, ((-1.5, 1.5), (-0.5, 2.0)), 0)
    S, steps = starts.shape[0], 300
    s = Section("learning_rate", "Too high a learning rate overshoots, too low crawls", SEED0 + ", " + SEED2,
                "Too High: Can cause overshooting the minimum and unstable training (loss increases). Too Low: Can lead "
                "to very slow convergence. (000; 002: 'Too Small - Training becomes excessively slow, Too Large - "
                "Training instability and overshooting minima')",
                f"rosenbrock, {S} random starts, {steps} steps, GD and Adam. Too high: GD at lr 0.01 (10x its largest "
                "stable lr near the valley), Adam at lr 1. Too low: lr 1e-6 (GD) and 1e-5 (Adam). Unstable = diverged "
                "or the loss increases on more than 20% of the steps; crawling = more than half the initial gap f - f* left.")
    with torch.no_grad():
        init = land.value(starts).numpy() - land.min_value
    figs = {}
    for n, hi, lo in (("sgd", 0.01, 1e-6), ("adam", 1.0, 1e-5)):
        rh = run(land, n, starts, steps, lr=hi)
        mh = measure(rh)
        rises = (np.diff(np.nan_to_num(rh.loss.numpy(), nan=1e300, posinf=1e300), axis=0) > 0).mean(0)
        bad = mh["diverged"].numpy() | (rises > 0.2)
        s.claims.append(proportion_claim(
            f"learning_rate.{n}_too_high", bad, hypothesis=f"{label(n)} at lr {hi:g} is unstable in most runs",
            metric="proportion of runs that diverge or whose loss increases on more than 20% of the steps",
            population=f"{S} random starts"))
        rl = run(land, n, starts, steps, lr=lo)
        left = (rl.loss[-1].numpy() - land.min_value) / init
        s.claims.append(proportion_claim(
            f"learning_rate.{n}_too_low", left > 0.5, hypothesis=f"{label(n)} at lr {lo:g} crawls in most runs",
            metric=f"proportion of runs with more than half the initial gap left after {steps} steps",
            population=f"{S} random starts"))
        figs[n] = (rh, rl, hi, lo)
    s.notes.append("Adam's step is about lr per coordinate whatever the gradient's size, so a too-high lr makes it "
                   "bounce around the minimum at a distance of about lr rather than blow up: the instability the "
                   "seed describes is GD's.")
    paths = {}
    for n, (rh, rl, hi, lo) in figs.items():
        paths[f"{label(n)} lr {hi:g} (too high)"] = rh.path[:, 0]
        paths[f"{label(n)} lr {lo:g} (too low)"] = rl.path[:, 0]
    cols = dict(zip(paths, [colour("sgd"), "#999999", colour("adam"), "#56B4E9"]))
    s.figures.append(("lr_paths.png", F.contour(land, paths, cols, "rosenbrock: too high and too low, from one start")))
    s.links.append(("GD too high vs too low", try_it_url(
        land.name, {"sgd": {"lr": 0.01}, "adam": {"lr": 1e-5}}, start=starts[0].tolist(), steps=steps)))
    return s


def schedule_section() -> Section:
    land = get_landscape("least_squares")
    starts = random_starts(50, ((-3.0, 4.0), (-4.0, 3.0)), 41)
    S, steps = starts.shape[0], 600
    lrs = {"sgd": np.array([0.01, 0.03, 0.1]), "adam": np.array([0.01, 0.03, 0.1])}
    noise = "batch=1,seed=9"
    f_star = land.min_value
    s = Section("schedule", "A decaying learning rate fine-tunes the solution (under noisy gradients)", SEED0 + ", " + SEED2,
                "Using learning rate schedulers (like ReduceLROnPlateau or cosine decay) to decrease it as training "
                "progresses, helping fine-tune the solution. (000) Solution: Learning Rate Scheduling (pre-defined "
                "reduction over time) (002)",
                f"{land.name} with stochastic gradients (one example per step, {noise}), {S} random starts x 3 lrs, "
                f"{steps} steps (3 epochs); constant lr vs cosine decay to 0 (torch's CosineAnnealingLR) from the same "
                "lr; the same data order for both. Metric: log10 of the mean f - f* over the last 50 steps. "
                "ReduceLROnPlateau is measured on a real task (section 'Real tasks').")
    curves = {}
    for n, grid in lrs.items():
        out = {}
        for sched in (None, "cosine"):
            r = settings_run(land, n, starts, steps, grid, schedule=sched, noise=noise)
            out[sched] = np.log10(r.loss[-50:].numpy().mean(0) - f_star).reshape(len(grid), S)
            curves[f"{label(n)}, {'cosine' if sched else 'constant'}"] = np.median(
                r.loss[:, S:2 * S].numpy() - f_star, axis=1)
        s.claims.append(paired_claim(
            f"schedule.cosine_{n}", out[None].ravel(), out["cosine"].ravel(), hypothesis=f"{label(n)} with cosine decay "
            "ends closer to the minimum than at a constant lr", metric="log10 mean f - f* (last 50 steps), constant - "
            "cosine", population=f"{len(grid)} lrs x {S} starts",
            where=where_holds(out[None].mean(1) - out["cosine"].mean(1)) | {"over": f"lrs {grid.tolist()}"}))
    styles = {k: ("--" if "cosine" in k else "-") for k in curves}
    cols = {k: colour("sgd" if k.startswith(label("sgd")) else "adam") for k in curves}
    s.figures.append(("schedule.png", F.lines({k: np.arange(steps + 1) for k in curves}, curves, cols,
                                              f"{land.name}, stochastic gradients: median f - f* at lr 0.03, constant "
                                              "(solid) vs cosine (dashed)", "step", "median f - f*", logy=True,
                                              styles=styles)))
    s.links.append(("SGD with cosine decay", try_it_url(land.name, {"sgd": {"lr": 0.03}}, start=starts[0].tolist(),
                                                        steps=steps, noise=noise, schedule="cosine")))
    return s
