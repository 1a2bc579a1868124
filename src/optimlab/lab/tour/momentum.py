"""Sections on plain gradient descent's troubles and momentum's answers (seed 002): high curvature,
the ravine, the role of beta, noisy gradients, local minima, saddle points, and NAG."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..engine import run
from ..landscapes import get_landscape
from ..metrics import measure
from ..verdicts import exact_claim, mean_claim, paired_claim, proportion_claim, where_holds
from . import figures as F
from .core import (Section, capped_steps, colour, crossings, flip_fraction, grid_starts, label, log_gap,
                   random_starts, try_it_url, tuned_lr)

SEED = "002_93c688692edab2f7.txt"
RAVINE = "elongated_bowl"
RAVINE_STARTS = dict(n=200, box=((-9.0, 9.0), (-2.5, 2.5)), seed=11)
RAVINE_STEPS, RAVINE_TOL = 300, 1e-4
LR_GRID = np.logspace(-3, 0, 16)


def ravine_starts() -> Tensor:
    return random_starts(**RAVINE_STARTS)


def settings_run(landscape: Any, optimizer: str, starts: Tensor, steps: int, lrs: np.ndarray,
                 betas: np.ndarray | None = None, **kw: Any):
    """One batched run over every (lr[, beta], start): trajectory order (lr, beta, start), start fastest."""
    L, S = len(lrs), starts.shape[0]
    B = 1 if betas is None else len(betas)
    lr = torch.from_numpy(np.repeat(np.asarray(lrs, float), B * S))
    pts = starts.repeat(L * B, 1)
    if betas is not None:
        kw["momentum"] = torch.from_numpy(np.tile(np.repeat(np.asarray(betas, float), S), L))
    return run(landscape, optimizer, pts, steps, lr=lr, **kw)


# ------------------------------------------------------------------------------------------ high curvature

def curvature_section() -> Section:
    land = get_landscape(RAVINE)
    starts = ravine_starts()[:20]
    lrs = np.linspace(0.1, 0.19, 10)
    r = settings_run(land, "sgd", starts, RAVINE_STEPS, lrs)
    fy, fx = flip_fraction(r.path, 1), flip_fraction(r.path, 0)
    full = np.logspace(-3, np.log10(0.19), 14)
    rf = settings_run(land, "sgd", starts, RAVINE_STEPS, full)
    per_lr = (flip_fraction(rf.path, 1) - flip_fraction(rf.path, 0)).reshape(len(full), -1)
    s = Section("curvature", "High curvature makes gradient descent oscillate", SEED,
                "High Curvature: Steep, narrow valleys that are difficult to navigate. Leads to oscillatory behavior "
                "in gradient descent.",
                f"{land.name} ({land.formula}): curvature 10 along y, 0.1 along x. GD from {len(starts)} random starts, "
                f"{RAVINE_STEPS} steps, at 10 learning rates in [0.1, 0.19] - the range where GD is fastest here (its "
                "tuned lr is 2 / (0.1 + 10) = 0.198). Metric per run: the fraction of steps whose y-component flips "
                "sign (high curvature) minus the same along x (low curvature).")
    s.claims.append(mean_claim(
        "curvature.gd_oscillates", fy - fx, hypothesis="along the high-curvature axis GD's steps flip sign more often "
        "than along the low-curvature axis", metric="flip fraction (y) - flip fraction (x), per run",
        population=f"{len(lrs)} lrs in [0.1, 0.19] x {len(starts)} random starts",
        where=where_holds(per_lr.mean(axis=1)) | {"over": f"{len(full)} lrs in 1e-3..0.19 (mean per lr)"}))
    s.notes.append(f"Below lr = 0.1 (= 1 / curvature) the y-steps do not flip at all: the oscillation needs "
                   f"lr * curvature > 1; the claim holds at {s.claims[0].where['holds_in']} of {len(full)} lrs on the "
                   "wider grid.")
    s.figures.append(("curvature_flips.png", F.lines(
        {"y (curvature 10)": full, "x (curvature 0.1)": full},
        {"y (curvature 10)": flip_fraction(rf.path, 1).reshape(len(full), -1).mean(1),
         "x (curvature 0.1)": flip_fraction(rf.path, 0).reshape(len(full), -1).mean(1)},
        {"y (curvature 10)": "#D55E00", "x (curvature 0.1)": "#0072B2"},
        "GD on the elongated bowl: how often the step flips sign, per axis", "learning rate",
        "fraction of steps that flip sign (mean over starts)", logx=True)))
    i = 5
    path = {f"GD lr {lrs[i]:.2f}": r.path[:, i * len(starts)], f"GD lr {full[7]:.3f}": rf.path[:, 7 * len(starts)]}
    s.figures.append(("curvature_paths.png", F.contour(land, path, dict(zip(path, ["#000000", "#E69F00"])),
                                                       f"{land.name}: GD zig-zags across the steep direction")))
    s.links.append(("GD zig-zagging in the ravine", try_it_url(land.name, {"sgd": {"lr": round(float(lrs[i]), 3)}},
                                                              start=starts[0].tolist(), steps=100)))
    return s


# ------------------------------------------------------------------------------------------ the ravine

def ravine_sweep() -> dict[str, Any]:
    """GD and Momentum over the lr grid from the random ravine starts (shared by two sections)."""
    land = get_landscape(RAVINE)
    starts = ravine_starts()
    out = {"starts": starts, "lrs": LR_GRID}
    for n in ("sgd", "momentum"):
        r = settings_run(land, n, starts, RAVINE_STEPS, LR_GRID)
        m = measure(r, RAVINE_TOL)
        out[n] = {"run": r, "steps": capped_steps(m["steps_to_tol"], RAVINE_STEPS).reshape(len(LR_GRID), -1),
                  "cross": crossings(r.path, 0, 0.0).reshape(len(LR_GRID), -1),
                  "flip_y": flip_fraction(r.path, 1).reshape(len(LR_GRID), -1)}
    return out


def momentum_section(sw: dict[str, Any]) -> Section:
    land = get_landscape(RAVINE)
    S = sw["starts"].shape[0]
    tuned = {n: tuned_lr(sw[n]["steps"], LR_GRID) for n in ("sgd", "momentum")}
    (ig, lg), (im, lm) = tuned["sgd"], tuned["momentum"]
    s = Section("momentum", "Momentum in a ravine: faster, but it overshoots and oscillates", SEED,
                "Faster Convergence: Accumulates velocity in consistent directions. Reduces oscillations in steep, "
                "narrow valleys ... When momentum builds up, it can overshoot the optimum. Algorithm oscillates around "
                "the minimum before settling.",
                f"{land.name}, {S} random starts, {RAVINE_STEPS} steps, tolerance f - f* <= {RAVINE_TOL:g}; Momentum "
                f"beta = 0.9 (torch form). Each optimizer at its own tuned lr: the best median steps-to-tolerance over "
                f"{len(LR_GRID)} lrs in 1e-3..1 (GD: {lg:.3g}, Momentum: {lm:.3g}). Overshoot = crossings of the "
                "minimum's x-coordinate (the flat axis, where GD never overshoots at a stable lr).")
    sg, sm = sw["sgd"]["steps"][ig], sw["momentum"]["steps"][im]
    s.claims.append(paired_claim(
        "momentum.faster", np.log10(sg), np.log10(sm), hypothesis="Momentum reaches the tolerance in fewer steps than GD",
        metric="log10(steps GD) - log10(steps Momentum), same start, each at its tuned lr",
        population=f"{S} random starts", details={"tuned_lr": {"sgd": lg, "momentum": lm},
                                                 "median_steps": {"sgd": float(np.median(sg)), "momentum": float(np.median(sm))}}))
    s.claims.append(paired_claim(
        "momentum.overshoots", sw["momentum"]["cross"][im], sw["sgd"]["cross"][ig],
        hypothesis="Momentum crosses the minimum (oscillates around it) more often than GD",
        metric="crossings of x = 0, Momentum - GD, same start, each at its tuned lr", population=f"{S} random starts"))
    both = np.arange(len(LR_GRID))[LR_GRID < 0.2]
    fy_g, fy_m = sw["sgd"]["flip_y"][both], sw["momentum"]["flip_y"][both]
    s.claims.append(paired_claim(
        "momentum.fewer_zigzags", fy_g.ravel(), fy_m.ravel(),
        hypothesis="in the steep direction Momentum zig-zags less than GD at the same lr (\"reduces oscillations\")",
        metric="fraction of steps whose y-component flips sign, GD - Momentum, same lr and start",
        population=f"{len(both)} lrs in 1e-3..0.2 (GD's stable range) x {S} starts",
        where=where_holds(fy_g.mean(1) - fy_m.mean(1)) | {"over": f"{len(both)} lrs"}))
    j = int(np.argmin(np.abs(sg - np.median(sg))))
    paths = {f"GD (lr {lg:.3g})": sw["sgd"]["run"].path[:, ig * S + j],
             f"Momentum (lr {lm:.3g})": sw["momentum"]["run"].path[:, im * S + j]}
    cols = dict(zip(paths, [colour("sgd"), colour("momentum")]))
    s.figures.append(("ravine_surface.png", F.surface(land, paths, cols, f"{land.name}: GD and Momentum, each at its tuned lr")))
    s.figures.append(("ravine_steps.png", F.lines(
        {label(n): LR_GRID for n in ("sgd", "momentum")},
        {label(n): np.median(sw[n]["steps"], axis=1) for n in ("sgd", "momentum")},
        {label(n): colour(n) for n in ("sgd", "momentum")},
        f"{land.name}: median steps to f - f* <= {RAVINE_TOL:g} ({RAVINE_STEPS + 1} = not reached)",
        "learning rate", "median steps over starts", logx=True, logy=True,
        bands={label(n): tuple(np.quantile(sw[n]["steps"], [0.25, 0.75], axis=1)) for n in ("sgd", "momentum")})))
    s.links.append(("GD vs Momentum at their tuned lrs", try_it_url(
        land.name, {"sgd": {"lr": lg}, "momentum": {"lr": lm}}, start=sw["starts"][j].tolist(), steps=RAVINE_STEPS)))
    return s


# ------------------------------------------------------------------------------------------ beta

BETAS = np.array([0.0, 0.1, 0.5, 0.8, 0.9, 0.95, 0.99])
BETA_LRS = np.array([0.003, 0.01, 0.03, 0.1])


def beta_section(sw: dict[str, Any]) -> Section:
    land = get_landscape(RAVINE)
    starts = sw["starts"][:40]
    S = starts.shape[0]
    r = settings_run(land, "momentum", starts, RAVINE_STEPS, BETA_LRS, BETAS)
    cross = crossings(r.path, 0, 0.0).reshape(len(BETA_LRS), len(BETAS), S)
    st = capped_steps(measure(r, RAVINE_TOL)["steps_to_tol"], RAVINE_STEPS).reshape(len(BETA_LRS), len(BETAS), S)
    g = settings_run(land, "sgd", starts, RAVINE_STEPS, BETA_LRS)
    gst = capped_steps(measure(g, RAVINE_TOL)["steps_to_tol"], RAVINE_STEPS).reshape(len(BETA_LRS), S)
    b0 = list(BETAS).index(0.0)
    s = Section("beta", "The role of beta: the averaging window, beta = 0 and beta -> 1", SEED,
                "beta = 0: Becomes standard gradient descent. beta = 1: Infinite memory, continues oscillating ... "
                "Too little momentum (low beta): behaves like standard GD. Too much momentum (high beta): excessive "
                "oscillations.",
                f"{land.name}, {S} random starts, {RAVINE_STEPS} steps, Momentum (torch form) over beta in "
                f"{BETAS.tolist()} x lr in {BETA_LRS.tolist()}; the seed's EWMA form over the same grid; beta = 1 at "
                f"the same lrs.")
    diff = (r.path.reshape(RAVINE_STEPS + 1, len(BETA_LRS), len(BETAS), S, 2)[:, :, b0]
            - g.path.reshape(RAVINE_STEPS + 1, len(BETA_LRS), S, 2)).abs()
    s.claims.append(exact_claim(
        "beta.zero_is_gd", float(diff.max()), hypothesis="with beta = 0 Momentum's trajectory is GD's",
        metric="max |w_t(Momentum, beta 0) - w_t(GD)| over every step", population=f"{len(BETA_LRS)} lrs x {S} starts",
        n=len(BETA_LRS) * S, threshold=1e-12, direction="<"))
    i01 = list(BETAS).index(0.1)
    s.claims.append(paired_claim(
        "beta.low_is_like_gd", np.log10(st[:, i01]), np.log10(gst), threshold=0.1, direction="within",
        hypothesis="with low beta (0.1) Momentum behaves like GD: steps to tolerance within 0.1 decades (26%)",
        metric="log10(steps Momentum beta 0.1) - log10(steps GD), same lr and start",
        population=f"{len(BETA_LRS)} lrs x {S} starts"))
    i9, i99 = list(BETAS).index(0.9), list(BETAS).index(0.99)
    s.claims.append(paired_claim(
        "beta.high_oscillates", cross[:, i99].ravel(), cross[:, i9].ravel(),
        hypothesis="a high beta (0.99) oscillates more than 0.9", metric="crossings of x = 0, beta 0.99 - beta 0.9",
        population=f"{len(BETA_LRS)} lrs x {S} starts",
        where=where_holds(cross[:, i99].mean(-1) - cross[:, i9].mean(-1)) | {"over": f"{len(BETA_LRS)} lrs"}))
    one = settings_run(land, "momentum", starts, RAVINE_STEPS, BETA_LRS[:3], np.array([1.0]))
    d0 = torch.linalg.vector_norm(one.path[0], dim=-1)
    dT = torch.linalg.vector_norm(one.path[-1], dim=-1)
    stays = (~torch.isfinite(dT)) | (dT >= 0.1 * d0)
    s.claims.append(proportion_claim(
        "beta.one_never_settles", stays.numpy(), hypothesis="with beta = 1 the run never settles: after 300 steps it "
        "is still at least 10% of its starting distance from the minimum (or has diverged)",
        metric="proportion of runs", population=f"{3} lrs x {S} starts", threshold=0.5, direction=">",
        why_n=f"{3 * S} runs; the Wilson interval is what decides" if 3 * S < 100 else ""))
    e = settings_run(land, "momentum-ewma", starts, RAVINE_STEPS, BETA_LRS, BETAS[1:])
    scaled = torch.from_numpy(np.repeat(BETA_LRS[:, None] * (1 - BETAS[None, 1:]), S, axis=1).ravel())
    t = run(land, "momentum", starts.repeat(len(BETA_LRS) * (len(BETAS) - 1), 1), RAVINE_STEPS, lr=scaled,
            momentum=torch.from_numpy(np.tile(np.repeat(BETAS[1:], S), len(BETA_LRS))))
    rel = float(((e.path - t.path).abs() / (1 + t.path.abs())).max())
    s.claims.append(exact_claim(
        "beta.ewma_form_effective_lr", rel, hypothesis="the seed's EWMA form v = b v + (1 - b) g, w -= lr v is the "
        "torch form at effective lr lr (1 - b): the same trajectory", metric="max relative |w_t(EWMA, lr) - "
        "w_t(torch, lr (1 - b))|", population=f"{len(BETA_LRS)} lrs x {len(BETAS) - 1} betas x {S} starts",
        n=len(BETA_LRS) * (len(BETAS) - 1) * S, threshold=1e-9, direction="<"))
    s.figures.append(("beta_crossings.png", F.heatmap(
        cross.mean(-1), BETAS, BETA_LRS, "beta", "learning rate", f"{land.name}: Momentum's mean crossings of the "
        "minimum (x = 0) over (lr, beta)", "mean crossings", centre=None, fmt="{:.1f}")))
    s.figures.append(("beta_steps.png", F.heatmap(
        np.log10(np.median(st, -1)), BETAS, BETA_LRS, "beta", "learning rate",
        f"{land.name}: log10 median steps to tolerance ({RAVINE_STEPS + 1} = not reached)", "log10 steps",
        centre=None)))
    s.links.append(("beta = 0.99 vs 0.5 at lr 0.01", try_it_url(
        land.name, {"momentum": {"lr": 0.01, "momentum": 0.99}, "momentum-ewma": {"lr": 0.1, "momentum": 0.5}},
        start=starts[0].tolist(), steps=RAVINE_STEPS)))
    return s


# ------------------------------------------------------------------------------------------ noise

def noise_section() -> Section:
    land = get_landscape("least_squares")
    starts = random_starts(200, ((-3.0, 4.0), (-4.0, 3.0)), 12)
    S, steps, lr = starts.shape[0], 400, 0.02
    noise = "batch=1,seed=5"
    gd = run(land, "sgd", starts, steps, lr=lr, noise=noise, record_grads=True)
    mo = run(land, "momentum-ewma", starts, steps, lr=lr, momentum=0.9, noise=noise, record_grads=True)

    def alignment(r, k: int) -> np.ndarray:
        d = (r.path[1:k + 1] - r.path[:k])
        true = land.grad(r.path[:k])
        cos = -(d * true).sum(-1) / (torch.linalg.vector_norm(d, dim=-1) * torch.linalg.vector_norm(true, dim=-1)
                                     ).clamp_min(1e-300)
        return cos.mean(0).numpy()

    k = 60
    a_gd, a_mo = alignment(gd, k), alignment(mo, k)
    tail = slice(steps - 100, steps + 1)
    f_star = land.min_value
    l_gd = np.log10(gd.loss[tail].mean(0).numpy() - f_star)
    l_mo = np.log10(mo.loss[tail].mean(0).numpy() - f_star)
    s = Section("noise", "Momentum averages out noisy gradients", SEED,
                "Smoother Navigation: Averages out noisy gradients. Provides more stable update directions ... "
                "Acts as a low-pass filter on gradients. Smooths out high-frequency noise.",
                f"{land.name} ({land.formula}): stochastic gradient descent - each step's gradient comes from ONE data "
                f"point (noise {noise}, a fresh permutation per epoch). {S} random starts, {steps} steps, GD at lr {lr} "
                f"vs Momentum in the seed's EWMA form (beta 0.9) at the same lr - the same step size for a constant "
                "gradient. Direction quality = cosine between the step and the true (full-data) descent direction, "
                f"averaged over the first {k} steps (while far from the minimum).")
    s.claims.append(paired_claim(
        "noise.momentum_smoother_direction", a_mo, a_gd, hypothesis="Momentum's steps point closer to the true descent "
        "direction than GD's under stochastic gradients", metric="mean cosine(step, -true gradient), Momentum - GD",
        population=f"{S} random starts (each with its own data order)"))
    s.claims.append(paired_claim(
        "noise.momentum_lower_floor", l_gd, l_mo, hypothesis="at the same effective step size, Momentum also ends "
        "closer to the minimum (lower noise floor)", metric="log10 mean f - f* over the last 100 steps, GD - Momentum",
        population=f"{S} random starts"))
    s.notes.append("The second claim is not the seed's sentence but its natural reading; theory (e.g. Mandt et al., "
                   "2017) says that at a matched effective step size the stationary spread is about the same.")
    j = 0
    paths = {f"SGD (lr {lr})": gd.path[:, j], f"Momentum EWMA form (lr {lr}, beta 0.9)": mo.path[:, j]}
    s.figures.append(("noise_paths.png", F.contour(land, paths, dict(zip(paths, [colour("sgd"), colour("momentum")])),
                                                   f"{land.name}: one data point per step")))
    s.links.append(("stochastic GD vs Momentum on least squares", try_it_url(
        land.name, {"sgd": {"lr": lr}, "momentum-ewma": {"lr": lr, "momentum": 0.9}}, start=starts[j].tolist(),
        steps=steps, noise=noise)))
    return s


# ------------------------------------------------------------------------------------------ local minima

LM_LRS = np.array([0.003, 0.01, 0.03])
LM_BETAS = np.array([0.5, 0.7, 0.8, 0.9, 0.95])
LM_STEPS = 800


def local_minimum_starts() -> Tensor:
    return grid_starts(np.linspace(1.3, 2.4, 12), np.linspace(-1.2, 1.2, 9))


def deep_reached(r) -> np.ndarray:
    m = measure(r)
    return ((m["nearest_minimum"] == 0) & ~m["diverged"] & (m["distance_to_minimum"] < 0.1)).numpy()


def local_minimum_section() -> Section:
    land = get_landscape("shallow_deep")
    starts = local_minimum_starts()
    S, L, B = starts.shape[0], len(LM_LRS), len(LM_BETAS)
    deep = {n: deep_reached(settings_run(land, n, starts, LM_STEPS, LM_LRS, LM_BETAS)).reshape(L, B, S)
            for n in ("momentum", "nag")}
    rg = settings_run(land, "sgd", starts, LM_STEPS, LM_LRS)
    deep["sgd"] = np.repeat(deep_reached(rg).reshape(L, 1, S), B, axis=1)
    s = Section("local_minima", "Momentum can roll out of a shallow minimum; NAG less often", SEED,
                "A ball with momentum can roll through small bumps and valleys. It can escape local minima due to "
                "accumulated velocity ... [NAG] Limitations: May struggle with shallow local minima.",
                f"{land.name} ({land.formula}): minimum 1 (deep, global) at x = {land.minima[0][0]:.3f}, minimum 2 "
                f"(shallow, local) at x = {land.minima[1][0]:.3f}. {S} starts on a 12 x 9 grid on the shallow side "
                f"(x in 1.3..2.4, y in -1.2..1.2) x lr {LM_LRS.tolist()} x beta {LM_BETAS.tolist()} ({L * B} settings),"
                f" {LM_STEPS} steps; GD at the same lrs. Escaped = ended within 0.1 of minimum 1.")
    d_mg = deep["momentum"].astype(float) - deep["sgd"]
    d_nm = deep["nag"].astype(float) - deep["momentum"]
    s.claims.append(mean_claim(
        "local_minima.momentum_escapes", d_mg.ravel(), hypothesis="Momentum ends in the deep minimum more often than GD",
        metric="escaped(Momentum) - escaped(GD), same start and lr", population=f"{L * B} (lr, beta) settings x {S} starts",
        where=where_holds(d_mg.mean(-1)) | {"over": f"{L * B} (lr, beta) settings"}))
    s.claims.append(mean_claim(
        "local_minima.nag_struggles", d_nm.ravel(), direction="<", hypothesis="NAG escapes the shallow minimum less "
        "often than Momentum", metric="escaped(NAG) - escaped(Momentum), same start, lr and beta",
        population=f"{L * B} (lr, beta) settings x {S} starts",
        where=where_holds(d_nm.mean(-1), direction="<") | {"over": f"{L * B} (lr, beta) settings"}))
    s.figures.append(("local_minima_map.png", F.heatmap(
        d_nm.mean(-1), LM_BETAS, LM_LRS, "beta", "learning rate", "fraction escaped: NAG - Momentum, per setting "
        "(purple = NAG escapes less)", "NAG - Momentum", fmt="{:+.2f}")))
    li, bi = list(LM_LRS).index(0.01), list(LM_BETAS).index(0.9)
    vals = np.stack([deep[n][li, bi].astype(float) * 2 - 1 for n in ("sgd", "momentum", "nag")])
    s.figures.append(("local_minima_starts.png", F.start_map(
        land, starts, vals, "starts that end in the deep minimum 1 (orange) or not (purple), lr 0.01, beta 0.9",
        "escaped (+1) / stayed (-1)", [label(n) for n in ("sgd", "momentum", "nag")])))
    k = int(np.nonzero(deep["momentum"][li, bi] & ~deep["nag"][li, bi])[0][0]) if (deep["momentum"][li, bi] & ~deep["nag"][li, bi]).any() else 0
    paths = {}
    for n in ("sgd", "momentum", "nag"):
        kw = {} if n == "sgd" else {"momentum": 0.9}
        paths[label(n)] = run(land, n, starts[k], LM_STEPS, lr=0.01, **kw).path[:, 0]
    s.figures.append(("local_minima_surface.png", F.surface(land, paths, {label(n): colour(n) for n in ("sgd", "momentum", "nag")},
                                                            f"{land.name}: from ({starts[k, 0]:.2f}, {starts[k, 1]:.2f}), lr 0.01, beta 0.9")))
    s.links.append(("GD, Momentum and NAG from the same start", try_it_url(
        land.name, {"sgd": {"lr": 0.01}, "momentum": {"lr": 0.01, "momentum": 0.9}, "nag": {"lr": 0.01, "momentum": 0.9}},
        start=starts[k].tolist(), steps=LM_STEPS)))
    return s


# ------------------------------------------------------------------------------------------ saddle

def saddle_section() -> Section:
    land = get_landscape("saddle")
    rng = np.random.default_rng(13)
    n = 100
    starts = torch.from_numpy(np.stack([rng.uniform(-2.5, 2.5, n),
                                        rng.choice([-1.0, 1.0], n) * 10 ** rng.uniform(-6, -2, n)], axis=1))
    lrs = np.array([0.01, 0.03])
    steps = 800
    names = ("sgd", "momentum", "nag", "rmsprop", "adam")
    esc = {}
    for nm in names:
        r = settings_run(land, nm, starts, steps, lrs)
        esc[nm] = capped_steps(measure(r)["steps_to_escape"], steps)
        if nm == "sgd":
            example = r
    s = Section("saddle", "Gradient descent is slow to leave a saddle point", SEED,
                "Saddle Points: Flat regions where gradient is zero in some directions but not others. Basic Gradient "
                "Descent becomes \"stuck\" despite nearby lower points.",
                f"{land.name} ({land.formula}): a saddle at (0, 0). {n} starts with x in -2.5..2.5 and |y| log-uniform "
                f"in 1e-6..1e-2 (just off the saddle's attracting line) x lr {lrs.tolist()}, {steps} steps, every "
                "optimizer at the same lr (momentum 0.9). Escaped = the loss fell 1 below the saddle's value.")
    for nm in names[1:]:
        s.claims.append(paired_claim(
            f"saddle.gd_slower_than_{nm}", np.log10(esc["sgd"]), np.log10(esc[nm]),
            hypothesis=f"GD takes longer than {label(nm)} to leave the saddle",
            metric=f"log10(steps to escape GD) - log10(steps {label(nm)}), same start and lr",
            population=f"{len(lrs)} lrs x {n} starts"))
    j = int(np.argmax(starts[:, 1].abs().numpy() < 1e-5))
    paths = {}
    for nm in names:
        paths[label(nm)] = run(land, nm, starts[j % n], steps, lr=0.01).path[:, 0]
    s.figures.append(("saddle.png", F.surface(land, paths, {label(nm): colour(nm) for nm in names},
                                              f"{land.name}: leaving the saddle from ({float(starts[j % n, 0]):.2f}, "
                                              f"{float(starts[j % n, 1]):.1e}), lr 0.01")))
    s.figures.append(("saddle_steps.png", F.lines(
        {label(nm): lrs for nm in names}, {label(nm): np.median(esc[nm].reshape(len(lrs), n), 1) for nm in names},
        {label(nm): colour(nm) for nm in names}, f"{land.name}: median steps to escape ({steps + 1} = never)",
        "learning rate", "median steps to escape", logx=True, logy=True)))
    s.links.append(("five optimizers at a saddle", try_it_url(land.name, {nm: {"lr": 0.01} for nm in names},
                                                             start=starts[j % n].tolist(), steps=600)))
    del example
    return s


# ------------------------------------------------------------------------------------------ NAG

NAG_LRS = np.logspace(-3, 0, 13)
NAG_BETAS = np.array([0.5, 0.8, 0.9, 0.95, 0.99])
DEFAULT_LANDSCAPES = ("bowl", "elongated_bowl", "rosenbrock", "beale", "himmelblau", "shallow_deep", "least_squares")


def nag_section(sw: dict[str, Any]) -> Section:
    land = get_landscape(RAVINE)
    starts = sw["starts"][:12]
    S, L, B = starts.shape[0], len(NAG_LRS), len(NAG_BETAS)
    res = {}
    for n in ("momentum", "nag"):
        r = settings_run(land, n, starts, RAVINE_STEPS, NAG_LRS, NAG_BETAS)
        m = measure(r, RAVINE_TOL)
        res[n] = {"div": m["diverged"].numpy().reshape(L, B, S), "reached": (m["steps_to_tol"] >= 0).numpy().reshape(L, B, S),
                  "cross": (crossings(r.path, 0, 0.0) + crossings(r.path, 1, 0.0)).reshape(L, B, S), "run": r}
    s = Section("nag", "NAG: fewer oscillations - but more stable, less sensitive, a better default?", SEED,
                "Faster convergence with minimal oscillations. Stable in high-curvature regions ... Parameter "
                "Sensitivity: Medium (Momentum) vs Low (NAG) ... NAG is often a superior default choice ... Slight "
                "computational overhead per iteration.",
                f"{land.name} (curvature 10 and 0.1), {S} random starts x lr in 1e-3..1 ({L} values) x beta in "
                f"{NAG_BETAS.tolist()} = {L * B * S} runs per optimizer, {RAVINE_STEPS} steps; Momentum in torch's form, "
                "NAG in the seed's look-ahead form (the same lr scale at a constant lr). The default claim uses the "
                f"seed's recommended beta 0.9, lr 0.01 on {len(DEFAULT_LANDSCAPES)} landscapes.")
    ok = ~res["momentum"]["div"] & ~res["nag"]["div"]
    dc = res["momentum"]["cross"] - res["nag"]["cross"]
    cell = np.where(ok, dc, 0.0).sum(-1) / np.maximum(ok.sum(-1), 1)
    s.claims.append(mean_claim(
        "nag.fewer_oscillations", dc[ok], hypothesis="NAG crosses the minimum fewer times than Momentum",
        metric="crossings of the minimum (x = 0 plus y = 0), Momentum - NAG, same lr, beta and start",
        population=f"the (lr, beta, start) settings where neither diverges ({int(ok.sum())} of {ok.size})",
        where=where_holds(cell[ok.any(-1)]) | {"over": "(lr, beta) cells where both run"}))
    s.claims.append(mean_claim(
        "nag.more_stable", (res["momentum"]["div"].astype(float) - res["nag"]["div"]).ravel(),
        hypothesis="NAG diverges in fewer settings than Momentum (\"stable in high-curvature regions\")",
        metric="diverged(Momentum) - diverged(NAG)", population=f"{L} lrs x {B} betas x {S} starts",
        where=where_holds((res["momentum"]["div"].astype(float) - res["nag"]["div"]).mean(-1).ravel())
        | {"over": f"{L * B} (lr, beta) cells"}))
    s.claims.append(mean_claim(
        "nag.less_sensitive", (res["nag"]["reached"].astype(float) - res["momentum"]["reached"]).ravel(),
        hypothesis="NAG reaches the tolerance in more of the (lr, beta) settings than Momentum (less sensitive)",
        metric="reached(NAG) - reached(Momentum) within the budget", population=f"{L} lrs x {B} betas x {S} starts"))
    first_div = {n: float(NAG_LRS[np.argmax(res[n]["div"][:, list(NAG_BETAS).index(0.9)].mean(-1) > 0.5)])
                 for n in ("momentum", "nag")}
    s.notes.append("At beta 0.9 the first lr of the grid where most runs diverge: Momentum "
                   f"{first_div['momentum']:.3g}, NAG {first_div['nag']:.3g}. On a quadratic with curvature h, the "
                   "heavy ball is stable for lr h < 2 (1 + beta) and NAG only for lr h < 2 (1 + beta) / (1 + 2 beta).")
    gaps = {"momentum": [], "nag": []}
    for i, name in enumerate(DEFAULT_LANDSCAPES):
        ld = get_landscape(name)
        (x0, x1), (y0, y1) = ld.window
        st = random_starts(40, ((x0 + 0.1 * (x1 - x0), x1 - 0.1 * (x1 - x0)), (y0 + 0.1 * (y1 - y0), y1 - 0.1 * (y1 - y0))), 100 + i)
        for n in ("momentum", "nag"):
            m = measure(run(ld, n, st, 500, lr=0.01, momentum=0.9))
            gaps[n].append(log_gap(m["loss_gap"], m["diverged"]))
    s.claims.append(paired_claim(
        "nag.better_default", np.concatenate(gaps["momentum"]), np.concatenate(gaps["nag"]),
        hypothesis="at the seed's default (beta 0.9, lr 0.01) NAG ends lower than Momentum",
        metric="log10(f - f*) after 500 steps, Momentum - NAG (diverged = 1e6)",
        population=f"{len(DEFAULT_LANDSCAPES)} landscapes x 40 random starts",
        where=where_holds([float(np.mean(a - b)) for a, b in zip(gaps["momentum"], gaps["nag"])])
        | {"over": ", ".join(DEFAULT_LANDSCAPES)}))
    extra = _nag_extra_ops()
    s.claims.append(exact_claim(
        "nag.extra_cost", extra["nesterov"] - extra["momentum"], hypothesis="a Nesterov step does more work than a "
        "Momentum step", metric="tensor operations per step of the core SGD rule, Nesterov - Momentum (gradient "
        "evaluations: 1 each)", population="one step of optimlab's SGD rule (torch form)", details=extra))
    dmap = res["momentum"]["div"].mean(-1).astype(float) - res["nag"]["div"].mean(-1)
    s.figures.append(("nag_stability.png", F.heatmap(
        dmap, NAG_BETAS, NAG_LRS, "beta", "learning rate", "fraction diverged: Momentum - NAG (purple = NAG diverges "
        "more)", "Momentum - NAG", fmt="{:+.2f}")))
    s.figures.append(("nag_oscillation.png", F.heatmap(
        cell, NAG_BETAS, NAG_LRS, "beta", "learning rate",
        "crossings: Momentum - NAG where both run (orange = NAG oscillates less)", "Momentum - NAG", fmt="{:+.1f}")))
    li, bi = int(np.argmin(np.abs(NAG_LRS - 0.1))), list(NAG_BETAS).index(0.9)
    paths = {f"{label(n)} (lr {NAG_LRS[li]:.2g})": res[n]["run"].path[:, (li * B + bi) * S] for n in ("momentum", "nag")}
    s.figures.append(("nag_paths.png", F.contour(land, paths, dict(zip(paths, [colour("momentum"), colour("nag")])),
                                                 f"{land.name}: Momentum vs NAG, same lr and beta 0.9")))
    s.links.append(("Momentum vs NAG in the ravine", try_it_url(
        land.name, {"momentum": {"lr": float(f"{NAG_LRS[li]:.3g}"), "momentum": 0.9},
                    "nag": {"lr": float(f"{NAG_LRS[li]:.3g}"), "momentum": 0.9}}, start=starts[0].tolist(),
        steps=RAVINE_STEPS)))
    s.gif = ("nag.gif", RAVINE, paths, dict(zip(paths, [colour("momentum"), colour("nag")])))
    return s


def _nag_extra_ops() -> dict[str, int]:
    """Tensor operations one step of the core SGD rule performs, with and without Nesterov."""
    from torch.overrides import TorchFunctionMode

    from ...algorithms import RULES

    class Count(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    out = {}
    p, g, buf = torch.ones(8), torch.full((8,), 0.5), torch.full((8,), 0.1)
    for key, nesterov in (("momentum", False), ("nesterov", True)):
        with Count() as c:
            RULES["sgd"].update(p, g, momentum_buffer=buf, lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0,
                                nesterov=nesterov, maximize=False)
        out[key] = c.n
    return out
