"""Sections on the adaptive optimizers (seed 002, with 000 and 001 on Adam): AdaGrad on the elongated
bowl and its vanishing step, the eps-inside-sqrt form, RMSProp vs AdaGrad, Adam's per-parameter step,
bias correction and the worked example, Nadam."""

from __future__ import annotations

import numpy as np
import torch

from ..engine import run
from ..landscapes import get_landscape
from ..metrics import effective_lr, measure
from ..verdicts import exact_claim, mean_claim, paired_claim, where_holds
from . import figures as F
from .core import Section, capped_steps, colour, label, log_gap, random_starts, try_it_url, tuned_lr
from .momentum import settings_run
from .tasks import benchmark_notes

SEED2, SEED0, SEED1 = "002_93c688692edab2f7.txt", "000_f06fc82abbd9c8ce.txt", "001_3852f964897d5704.txt"
ADA_LRS = np.logspace(-3, 0.5, 15)
ADA_STEPS = 2000


def _inner_box(name: str, margin: float = 0.1):
    (x0, x1), (y0, y1) = get_landscape(name).window
    return ((x0 + margin * (x1 - x0), x1 - margin * (x1 - x0)), (y0 + margin * (y1 - y0), y1 - margin * (y1 - y0)))


def adagrad_section() -> Section:
    land = get_landscape("scaled_features")
    starts = random_starts(100, _inner_box(land.name), 21)
    S, steps, tol = starts.shape[0], ADA_STEPS, 1e-6
    st, runs = {}, {}
    for n in ("sgd", "adagrad"):
        r = settings_run(land, n, starts, steps, ADA_LRS)
        runs[n] = r
        st[n] = capped_steps(measure(r, tol)["steps_to_tol"], steps).reshape(len(ADA_LRS), S)
    tuned = {n: tuned_lr(st[n], ADA_LRS) for n in st}
    s = Section("adagrad", "AdaGrad on the elongated bowl of differently-scaled features", SEED2,
                "Features with Different Scales - Works well when input features vary widely in magnitude (e.g. CGPA "
                "on a 0-10 scale vs. Salary on a 0-200,000 scale) ... Standard optimizers move quickly along steep "
                "directions but slowly along flat regions.",
                f"{land.name}: least squares over 200 sampled points whose two features have scales 1 and 0.1 - the "
                f"loss is an elongated bowl (curvatures ~1 and ~0.01). {S} random starts, {steps} steps (full batch); "
                f"GD and AdaGrad each at its tuned lr (fewest median steps) from the same {len(ADA_LRS)} lrs in "
                f"1e-3..3.2 (GD {tuned['sgd'][1]:.3g}, AdaGrad {tuned['adagrad'][1]:.3g}). Metric: steps until "
                f"f - f* <= {tol:g} ({steps + 1} = not reached).")
    a, b = st["sgd"][tuned["sgd"][0]], st["adagrad"][tuned["adagrad"][0]]
    s.claims.append(paired_claim(
        "adagrad.beats_gd_scaled", np.log10(a), np.log10(b), hypothesis="AdaGrad reaches the tolerance in fewer "
        "steps than GD on differently-scaled features", metric="log10(steps GD) - log10(steps AdaGrad), each at its "
        "tuned lr", population=f"{S} random starts",
        details={"median_steps": {"sgd": float(np.median(a)), "adagrad": float(np.median(b))}}))
    j = 0
    paths = {f"{label(n)} (lr {tuned[n][1]:.3g})": runs[n].path[:, tuned[n][0] * S + j] for n in ("sgd", "adagrad")}
    s.figures.append(("adagrad_scaled.png", F.surface(land, paths, dict(zip(paths, [colour("sgd"), colour("adagrad")])),
                                                      f"{land.name}: GD vs AdaGrad, each at its tuned lr")))
    s.links.append(("GD vs AdaGrad on scaled features", try_it_url(
        land.name, {n: {"lr": float(f"{tuned[n][1]:.3g}")} for n in ("sgd", "adagrad")}, start=starts[j].tolist(), steps=steps)))
    notes, links = benchmark_notes(("AdaGrad for sparse features",))  # the seed's other AdaGrad advice, on a real task
    s.notes += notes
    s.see_also += links
    return s


WARM = 100  # the effective lr is compared from step WARM (after RMSProp's EWMA has warmed up) to the end


def vanishing_section() -> Section:
    lrs = np.array([0.01, 0.03, 0.1, 0.3])
    S, steps = 50, 1000
    cases = {"stochastic": ("least_squares", random_starts(S, _inner_box("least_squares"), 22), "batch=1,seed=4"),
             "noise-free": ("elongated_bowl", random_starts(S, ((-9.0, 9.0), (-2.5, 2.5)), 22), None)}
    ratio, eff = {}, {}
    for case, (name, starts, noise) in cases.items():
        for n in ("adagrad", "rmsprop"):
            r = settings_run(name, n, starts, steps, lrs, record_grads=True, noise=noise)
            e = effective_lr(r.path, r.grads)                      # (T, N, 2)
            ge = e.log().mean(-1).exp().numpy()                    # geometric mean over x, y
            first, last = ge[WARM - 1], ge[-1]
            ok = np.isfinite(first) & np.isfinite(last) & ~measure(r)["diverged"].numpy()
            ratio[case, n] = (np.log10(last / first), ok)
            if case == "stochastic":
                eff[label(n)] = np.nanmedian(np.where(np.isfinite(ge), ge, np.nan)[:, S:2 * S], axis=1)
    s = Section("vanishing", "AdaGrad's learning rate vanishes; RMSProp's does not", SEED2,
                "As V_t -> infinity, eta / sqrt(V_t + eps) -> 0, causing the learning rate to vanish ... [RMSProp] "
                "V_t no longer explodes - keeping the effective learning rate stable.",
                f"Stochastic: least_squares with one example per step (batch=1,seed=4), where gradients never vanish "
                f"(the deep-learning case); noise-free: elongated_bowl, where gradients shrink as the run converges. "
                f"{S} random starts x lr {lrs.tolist()}, {steps} steps each. Effective learning rate = |step| / "
                "|gradient| per coordinate, measured from the run (geometric mean of x and y); compared: log10 of the "
                f"last step's over step {WARM}'s (RMSProp's average of squares starts at 0, so its first steps are "
                "a warm-up transient: 1 / (1 - 0.99) = 100 steps); diverged runs left out. 'Vanishes' = keeps "
                f"falling: more than 2-fold between step {WARM} and step {steps}.")
    claims = {"adagrad": ("<", "AdaGrad's effective lr keeps falling: more than 2-fold from step {w} to {t}"),
              "rmsprop": (">", "RMSProp's effective lr does not vanish: it stays above half its value at step {w}")}
    for case in cases:
        for n, (direction, text) in claims.items():
            r, ok = ratio[case, n]
            s.claims.append(mean_claim(
                f"vanishing.{n}_{case.replace('-', '_')}", r[ok], threshold=float(np.log10(0.5)), direction=direction,
                hypothesis=f"({case}) " + text.format(w=WARM, t=steps),
                metric=f"log10(effective lr at step {steps} / at step {WARM})",
                population=f"{len(lrs)} lrs x {S} starts, runs that stayed finite ({int(ok.sum())})"))
    s.notes.append("Without noise AdaGrad's sum of squared gradients converges as the gradients shrink, so its lr "
                   "levels off instead of vanishing; with gradients that stay noisy it falls like 1 / sqrt(t).")
    s.figures.append(("effective_lr.png", F.lines(
        {k: np.arange(1, steps + 1) for k in eff}, eff, {label(n): colour(n) for n in ("adagrad", "rmsprop")},
        f"least_squares, one example per step: effective per-parameter lr at lr {lrs[1]} (median over starts)", "step",
        "|step| / |gradient| (geometric mean of x, y)", logy=True, logx=True)))
    s.links.append(("AdaGrad vs RMSProp with stochastic gradients", try_it_url(
        "least_squares", {"adagrad": {"lr": 0.1}, "rmsprop": {"lr": 0.01}}, steps=steps, noise="batch=1,seed=4")))
    # eps inside the square root (the seed's AdaGrad form) vs the framework's eps outside
    land = get_landscape("elongated_bowl")
    starts = cases["noise-free"][1]
    ei = run(land, "adagrad-seed", starts, 500, lr=0.1, eps=1e-8)
    eo = run(land, "adagrad", starts, 500, lr=0.1, eps=1e-8)
    rel = float(((ei.path - eo.path).abs() / (1 + eo.path.abs())).max())
    s.claims.append(exact_claim(
        "vanishing.eps_inside_sqrt", rel, threshold=1e-4, direction="<", n=S,
        hypothesis="the seed's AdaGrad (eps inside the square root) and the framework's (eps outside) give the same "
        "trajectory (to 1e-4) while gradients are far above sqrt(eps)", metric="max relative |w_t(inside) - "
        "w_t(outside)| over 500 steps", population=f"{S} random starts on elongated_bowl, lr 0.1, eps 1e-8"))
    tiny = torch.tensor([[1e-5, 1e-6]], dtype=torch.float64)
    pi = run("bowl", "adagrad-seed", tiny, 1, lr=0.1, eps=1e-8).path[1, 0]
    po = run("bowl", "adagrad", tiny, 1, lr=0.1, eps=1e-8).path[1, 0]
    s.notes.append("Where they differ: from (1e-5, 1e-6) on the bowl (gradient 2e-5, 2e-6) one step of lr 0.1, eps "
                   f"1e-8 moves x by {float(tiny[0, 0] - pi[0]):.3g} with eps inside sqrt (the step is capped by sqrt(eps) = 1e-4) "
                   f"and by {float(tiny[0, 0] - po[0]):.3g} with eps outside (a full lr-sized step).")
    return s


CONVEX = ("bowl", "elongated_bowl", "least_squares", "scaled_features")
NONCONVEX = ("rosenbrock", "beale", "himmelblau", "shallow_deep", "ackley", "rastrigin")
CMP_LRS = np.logspace(-3, 0, 5)


def _compare_on(names, optimizers, steps=500, per=25, seed=300):
    """Per landscape: each optimizer at its tuned lr (median final log gap over CMP_LRS), paired final
    log10 gaps from the same random starts."""
    out = {n: [] for n in optimizers}
    tuned = {}
    for i, name in enumerate(names):
        st = random_starts(per, _inner_box(name), seed + i)
        for n in optimizers:
            m = measure(settings_run(name, n, st, steps, CMP_LRS))
            g = log_gap(m["loss_gap"], m["diverged"]).reshape(len(CMP_LRS), per)
            k, lr = tuned_lr(g, CMP_LRS)
            tuned[(name, n)] = lr
            out[n].append(g[k])
    return out, tuned


def rmsprop_section() -> Section:
    conv, t1 = _compare_on(CONVEX, ("adagrad", "rmsprop"))
    nonc, t2 = _compare_on(NONCONVEX, ("adagrad", "rmsprop"), seed=400)
    s = Section("rmsprop", "RMSProp vs AdaGrad: alike on convex problems, better on non-convex ones", SEED2,
                "Convex Problems: Performs similarly to AdaGrad (since learning rate decay is mild). Non-Convex "
                "Problems (Deep NNs): Performs far better - continues updating parameters effectively.",
                f"Convex: {', '.join(CONVEX)}; non-convex: {', '.join(NONCONVEX)}. 25 random starts per landscape, "
                f"500 steps; each optimizer at its own tuned lr per landscape (best median final loss over "
                f"{len(CMP_LRS)} lrs in 1e-3..1). Metric: log10(f - f*) at the end (floor 1e-16, diverged = 1e6).")
    a, b = np.concatenate(conv["adagrad"]), np.concatenate(conv["rmsprop"])
    s.claims.append(paired_claim(
        "rmsprop.similar_convex", a, b, threshold=1.0, direction="within", hypothesis="on convex landscapes RMSProp and "
        "AdaGrad end within one decade of each other", metric="log10 gap AdaGrad - log10 gap RMSProp, same start",
        population=f"{len(CONVEX)} convex landscapes x 25 starts",
        where=where_holds([float(np.mean(x - y)) for x, y in zip(conv["adagrad"], conv["rmsprop"])], 1.0, "within")
        | {"over": ", ".join(CONVEX)}))
    a, b = np.concatenate(nonc["adagrad"]), np.concatenate(nonc["rmsprop"])
    s.claims.append(paired_claim(
        "rmsprop.better_nonconvex", a, b, hypothesis="on non-convex landscapes RMSProp ends lower than AdaGrad",
        metric="log10 gap AdaGrad - log10 gap RMSProp, same start", population=f"{len(NONCONVEX)} non-convex landscapes x 25 starts",
        where=where_holds([float(np.mean(x - y)) for x, y in zip(nonc["adagrad"], nonc["rmsprop"])])
        | {"over": ", ".join(NONCONVEX)}))
    names = CONVEX + NONCONVEX
    vals = {n: [float(np.median(v)) for v in conv[n] + nonc[n]] for n in ("adagrad", "rmsprop")}
    s.figures.append(("rmsprop_vs_adagrad.png", F.lines(
        {label(n): np.arange(len(names)) for n in vals}, {label(n): np.array(v) for n, v in vals.items()},
        {label(n): colour(n) for n in vals}, "median final log10(f - f*) per landscape (left 4 convex)",
        "landscape: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)), "median log10(f - f*)",
        vline=len(CONVEX) - 0.5)))
    s.links.append(("AdaGrad vs RMSProp on Rosenbrock", try_it_url(
        "rosenbrock", {n: {"lr": float(f"{t2[('rosenbrock', n)]:.3g}")} for n in ("adagrad", "rmsprop")}, steps=500)))
    return s


def adam_step_section() -> Section:
    land = get_landscape("elongated_bowl")
    starts = random_starts(50, ((-9.0, 9.0), (-2.5, 2.5)), 23)
    lrs = np.array([0.01, 0.03, 0.1, 0.3])
    S, k = starts.shape[0], 20
    ratio = {}
    for n in ("sgd", "adam"):
        r = settings_run(land, n, starts, k, lrs if n == "adam" else lrs / 10, record_grads=True)
        e = effective_lr(r.path, r.grads).numpy()              # (T, N, 2)
        ratio[n] = np.log10(np.nanmedian(e[:, :, 0] / e[:, :, 1], axis=0))
    s = Section("adam_step", "Adam's per-parameter step size", SEED0,
                "Adam adapts it PER PARAMETER ... making steps smaller for parameters with large gradients and larger "
                "for those with small gradients.",
                f"elongated_bowl ({land.formula}): the y-gradient is ~100 times the x-gradient's scale. {S} random "
                f"starts x lr {lrs.tolist()} (GD at a tenth of them), first {k} steps. Metric: log10 of the ratio of "
                "the effective learning rates |step_x / g_x| / |step_y / g_y| (median over the steps): 0 for GD, which "
                "gives every coordinate the same lr.")
    s.claims.append(mean_claim(
        "adam_step.per_parameter", ratio["adam"], hypothesis="Adam gives the small-gradient coordinate (x) a larger "
        "effective lr than the large-gradient one (y)", metric="log10(effective lr x / effective lr y), Adam",
        population=f"{len(lrs)} lrs x {S} starts", details={"gd_max_abs": float(np.abs(ratio["sgd"]).max())}))
    s.notes.append(f"The same ratio for GD is 0 to within {float(np.abs(ratio['sgd']).max()):.1e} on every run.")
    paths = {"GD (lr 0.01)": run(land, "sgd", starts[0], 200, lr=0.01).path[:, 0],
             "Adam (lr 0.1)": run(land, "adam", starts[0], 200, lr=0.1).path[:, 0]}
    s.figures.append(("adam_step.png", F.contour(land, paths, dict(zip(paths, [colour("sgd"), colour("adam")])),
                                                 "elongated_bowl: Adam moves along the flat x-axis at the pace of the steep y")))
    s.links.append(("GD vs Adam on the ravine", try_it_url(land.name, {"sgd": {"lr": 0.01}, "adam": {"lr": 0.1}},
                                                           start=starts[0].tolist(), steps=200)))
    return s


def adam_bias_section() -> Section:
    from ...algorithms import RULES

    land = get_landscape("rosenbrock")
    starts = random_starts(50, _inner_box(land.name), 24)
    lrs = np.array([1e-3, 1e-2])
    S = starts.shape[0]
    lengths = {}
    for n in ("adam", "adam-nobc"):
        r = settings_run(land, n, starts, 300, lrs)
        lengths[n] = torch.linalg.vector_norm(r.path[1:] - r.path[:-1], dim=-1).numpy()
    early = np.log10(lengths["adam-nobc"][:10].sum(0) / lengths["adam"][:10].sum(0))
    late = np.log10(lengths["adam-nobc"][-10:].sum(0) / lengths["adam"][-10:].sum(0))
    s = Section("adam_bias", "Adam's bias correction, and seed 001's worked example", SEED0 + ", " + SEED1,
                "Early in training, these moments are biased, so Adam includes a bias-correction step to adjust them. "
                "(000) ... Initial weight: 0.5, Learning rate: 0.001, Gradient: 0.2 ... New weight = 0.49684 (001, "
                "whose update rule has no bias correction)",
                f"rosenbrock, {S} random starts x lr {lrs.tolist()}, 300 steps, Adam with and without bias correction "
                "(betas 0.9, 0.999). Metric: log10 of the path length over steps 1-10 (and 291-300), without / with.")
    s.claims.append(mean_claim(
        "adam_bias.matters_early", np.abs(early), threshold=float(np.log10(1.2)), direction=">",
        hypothesis="bias correction changes the first 10 steps' length by more than 20%",
        metric="|log10(path length steps 1-10, without / with)|", population=f"{len(lrs)} lrs x {S} starts"))
    s.claims.append(paired_claim(
        "adam_bias.fades", np.abs(early), np.abs(late), hypothesis="the difference is smaller late (steps 291-300) "
        "than early", metric="|log10 ratio| early - late", population=f"{len(lrs)} lrs x {S} starts"))
    w = {}
    for bc in (False, True):
        z = torch.zeros(1, dtype=torch.float64)
        out = RULES["adam"].update(torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64),
                                   z, z, step=1.0, lr=1e-3, bias_correction=bc)
        w[bc] = float(out["param"])
    s.claims.append(exact_claim(
        "adam_bias.worked_example", abs(round(w[False], 5) - 0.49684), threshold=5e-6, direction="<",
        hypothesis="one step of optimlab's Adam rule without bias correction on seed 001's numbers gives 0.49684",
        metric="|w_1 rounded to 5 digits - 0.49684|", population="the seed's example (w 0.5, g 0.2, lr 1e-3, "
        "betas 0.9 / 0.999, eps 1e-8)", details={"without_correction": w[False], "with_correction": w[True]}))
    s.notes.append(f"With bias correction the same step gives {w[True]:.6f} (a step of exactly lr: m_hat / sqrt(v_hat) "
                   f"= g / |g| = 1); without it {w[False]:.6f} (m / sqrt(v) = 0.1 / sqrt(0.001) = 3.16).")
    med = {label(n): np.median(lengths[n][:, :S], axis=1) for n in lengths}
    s.figures.append(("adam_bias.png", F.lines(
        {k: np.arange(1, 301) for k in med}, med, {label("adam"): colour("adam"), label("adam-nobc"): colour("momentum")},
        f"rosenbrock: Adam's step length with and without bias correction, lr {lrs[0]} (median over starts)", "step",
        "|w_t - w_(t-1)|", logy=True)))
    s.links.append(("Adam with and without bias correction", try_it_url(
        land.name, {"adam": {"lr": 0.001}, "adam-nobc": {"lr": 0.001}}, steps=300)))
    return s


def nadam_section() -> Section:
    names = ("elongated_bowl", "rosenbrock", "beale", "himmelblau", "bowl", "least_squares")
    res, tuned = _compare_on(names, ("adam", "nadam"), seed=500)
    s = Section("nadam", "Nadam: Adam with Nesterov's look-ahead", SEED2,
                "Nadam - Combines Adam with Nesterov acceleration",
                f"{', '.join(names)}: 25 random starts each, 500 steps, Adam and Nadam each at its own tuned lr per "
                f"landscape ({len(CMP_LRS)} lrs in 1e-3..1). Metric: log10(f - f*) at the end.")
    a, b = np.concatenate(res["adam"]), np.concatenate(res["nadam"])
    s.claims.append(paired_claim(
        "nadam.beats_adam", a, b, hypothesis="Nadam ends lower than Adam (Nesterov's acceleration added to Adam)",
        metric="log10 gap Adam - log10 gap Nadam, same start", population=f"{len(names)} landscapes x 25 starts",
        where=where_holds([float(np.mean(x - y)) for x, y in zip(res["adam"], res["nadam"])]) | {"over": ", ".join(names)}))
    vals = {n: np.array([float(np.median(v)) for v in res[n]]) for n in res}
    s.figures.append(("nadam.png", F.lines(
        {label(n): np.arange(len(names)) for n in vals}, {label(n): v for n, v in vals.items()},
        {label(n): colour(n) for n in vals}, "median final log10(f - f*) per landscape, each at its tuned lr",
        "landscape: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)), "median log10(f - f*)")))
    s.links.append(("Adam vs Nadam on Rosenbrock", try_it_url(
        "rosenbrock", {n: {"lr": float(f"{tuned[('rosenbrock', n)]:.3g}")} for n in ("adam", "nadam")}, steps=500)))
    return s
