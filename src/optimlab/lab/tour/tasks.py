"""Real-task claims (``optimlab.train`` tasks): Adam's usual lr range, Adam for LSTMs, RMSProp vs Adam,
Nadam vs Adam, and ReduceLROnPlateau; and the Keras table (seed 002's snippets and their equivalents).

Every run trains a small network, so these claims rest on a few seeds rather than hundreds of runs;
each claim says so (``why_n``) and its bootstrap interval over the seeds is what decides. The default
tour runs a reduced plan (:data:`REDUCED`: one small task, short budgets); ``optimlab tour --full``
runs :data:`FULL`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..verdicts import exact_claim, paired_claim, proportion_claim
from . import figures as F
from .core import Section, colour, label

SEED0, SEED1, SEED2 = "000_f06fc82abbd9c8ce.txt", "001_3852f964897d5704.txt", "002_93c688692edab2f7.txt"
ADAM_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


@dataclass(frozen=True)
class Plan:
    """How much real training the tour does."""

    name: str
    tasks: tuple[str, ...]      # for the lr-range, RMSProp and Nadam claims
    lstm_task: str
    seeds: int
    steps: int                  # per run (None would be the task's budget)
    lstm_steps: int
    lstm_lrs: tuple[float, ...]


REDUCED = Plan("reduced", ("cancer-logreg", "digits-mlp"), "adding-lstm", 3, 100, 100, (1e-2, 1e-1))
FULL = Plan("full", ("cancer-logreg", "digits-mlp", "sparse-logreg", "digits-cnn"), "adding-lstm", 5, 600, 1500,
            (1e-3, 3e-3, 1e-2, 3e-2, 1e-1))


#: the seed's practical advice the benchmark protocol measures (``optimlab protocol``, docs/benchmark.md)
BENCHMARK_CLAIMS = ("Adam is a good default", "RMSProp sometimes beats Adam", "AdaGrad for sparse features")


def benchmark_notes(claims=BENCHMARK_CLAIMS, md_path=None) -> tuple[list[str], list[tuple[str, str]]]:
    """Notes stating the committed benchmark report's verdicts on ``claims`` (with its intervals), and
    the links to that report, for a section's ``notes`` and ``see_also``.

    The numbers are read from ``docs/benchmark/summary.json`` (written with the report by
    ``optimlab protocol --docs docs/benchmark.md``); without it the note only points to the report."""
    from ...train.protocol_report import DOCS_REPORT, read_summary

    md = DOCS_REPORT if md_path is None else md_path
    summary = read_summary(md)
    links = [("the benchmark report: tuned studies, time to target, performance profiles (docs/benchmark.md)",
              "docs/benchmark.md"),
             ("its HTML version, once `optimlab protocol` has written it (out/bench/report.html)",
              "out/bench/report.html")]
    if summary is None:
        return [f"The benchmark protocol (`optimlab protocol`) measures {', '.join(claims)} on real tasks with "
                "tuned studies and intervals: see docs/benchmark.md."], links
    by_claim = {v["claim"]: v for v in summary["verdicts"]}
    label = f" ({summary['label']})" if summary.get("label") else ""
    notes = []
    for claim in claims:
        v = by_claim.get(claim)
        if v is None:
            notes.append(f"Benchmark protocol{label}, run {summary['date']}: '{claim}' was not measured in that run.")
        else:
            notes.append(f"Benchmark protocol{label}, run {summary['date']} (docs/benchmark.md): '{claim}' "
                         f"{v['verdict'].upper()} - {v['numbers']}. Test: {v['test']}.")
    return notes, links


def _train(task: str, optimizer: str, lr: float, steps: int, seed: int, schedule: str = "none"):
    from ...train.loop import train

    return train(task, optimizer, lr, steps=steps, seed=seed, eval_every=max(1, steps // 10), schedule=schedule)


def _val_loss(task: str, optimizer: str, lr: float, steps: int, seed: int, schedule: str = "none") -> float:
    v = _train(task, optimizer, lr, steps, seed, schedule).evals[-1]["val_loss"]
    return v if math.isfinite(v) else math.inf


def _grid(task: str, optimizer: str, lrs, plan: Plan, steps: int) -> np.ndarray:
    """Final validation loss ``(len(lrs), seeds)``."""
    return np.array([[_val_loss(task, optimizer, lr, steps, seed) for seed in range(plan.seeds)] for lr in lrs])


def _best(grid: np.ndarray) -> np.ndarray:
    """Per seed, the best (lowest) finite validation loss over the lrs, as log10."""
    return np.log10(np.min(np.where(np.isfinite(grid), grid, 1e6), axis=0))


def tasks_section(plan: Plan = REDUCED) -> Section:
    """The real-task claims, trained on one thread (these models are too small to gain from more)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _tasks_section(plan)
    finally:
        torch.set_num_threads(threads)


def _tasks_section(plan: Plan) -> Section:
    why = (f"each run trains a network: {plan.seeds} seeds per task ({plan.name} plan; `optimlab tour --full` runs "
           "more); the interval over the seeds decides, and a wide one reads inconclusive")
    s = Section("tasks", "Real tasks: Adam's lr range, RMSProp, Nadam, LSTMs, ReduceLROnPlateau", SEED0 + ", " + SEED1
                + ", " + SEED2,
                "Common Range: 0.001 to 0.0001 (000) ... Why Use Adam for LSTM? LSTM gradients can vary widely (001) "
                "... some architectures perform better with RMSProp than with Adam (002) ... learning rate schedulers "
                "(like ReduceLROnPlateau ...) (000)",
                f"optimlab.train tasks ({plan.name} plan): {', '.join(plan.tasks)} for the lr-range, RMSProp and Nadam "
                f"claims, {plan.lstm_task} for the LSTM claim; {plan.seeds} seeds (initial weights and data order), "
                f"{plan.steps} steps ({plan.lstm_steps} for the LSTM), each task's default mini-batch mode. Metric: "
                f"the final validation loss. Adam's lr grid {list(ADAM_LRS)}; each optimizer at its best lr of that "
                "grid per seed.")
    grids = {t: {n: _grid(t, n, ADAM_LRS, plan, plan.steps) for n in ("adam", "rmsprop", "nadam")} for t in plan.tasks}
    in_range = []
    rows = []
    for t in plan.tasks:
        g = grids[t]["adam"]
        best = np.argmin(np.where(np.isfinite(g), g, np.inf), axis=0)
        lrs = np.array(ADAM_LRS)[best]
        in_range += list((lrs >= 1e-4) & (lrs <= 1e-3))
        rows.append([t, ", ".join(f"{x:g}" for x in lrs)] + [f"{np.median(grids[t][n].min(0)):.4g}" for n in ("adam", "rmsprop", "nadam")])
    s.table = (["task", "Adam's best lr per seed", "median best val loss: Adam", "RMSProp", "Nadam"], rows)
    s.claims.append(proportion_claim(
        "tasks.adam_lr_range", np.array(in_range), hypothesis="Adam's best lr lies in the common range 1e-4..1e-3",
        metric="proportion of (task, seed) whose best lr on the grid is in [1e-4, 1e-3]",
        population=f"{len(plan.tasks)} tasks x {plan.seeds} seeds", why_n=why))
    a = np.concatenate([_best(grids[t]["adam"]) for t in plan.tasks])
    r = np.concatenate([_best(grids[t]["rmsprop"]) for t in plan.tasks])
    n_ = np.concatenate([_best(grids[t]["nadam"]) for t in plan.tasks])
    per_task = {t: float(np.mean(_best(grids[t]["adam"]) - _best(grids[t]["rmsprop"]))) for t in plan.tasks}
    s.claims.append(paired_claim(
        "tasks.rmsprop_vs_adam", a, r, hypothesis="RMSProp ends with a lower validation loss than Adam (the seed: on "
        "some architectures)", metric="log10 best val loss, Adam - RMSProp, same task and seed",
        population=f"{len(plan.tasks)} tasks x {plan.seeds} seeds", why_n=why, details={"per_task_mean": per_task}))
    s.claims.append(paired_claim(
        "tasks.nadam_vs_adam", a, n_, hypothesis="Nadam ends with a lower validation loss than Adam",
        metric="log10 best val loss, Adam - Nadam, same task and seed", population=f"{len(plan.tasks)} tasks x "
        f"{plan.seeds} seeds", why_n=why))
    lstm = {n: _grid(plan.lstm_task, n, plan.lstm_lrs, plan, plan.lstm_steps) for n in ("adam", "momentum")}
    s.claims.append(paired_claim(
        "tasks.adam_for_lstm", _best(lstm["momentum"]), _best(lstm["adam"]), hypothesis="on an LSTM Adam ends with a "
        "lower validation loss than SGD with momentum", metric=f"log10 best val loss over lrs {list(plan.lstm_lrs)}, "
        "Momentum - Adam, same seed", population=f"{plan.lstm_task} x {plan.seeds} seeds", why_n=why))
    t0 = plan.tasks[-1]
    lr_hi, plateau = 3e-2, "plateau:1:0.5"
    const = np.array([_val_loss(t0, "adam", lr_hi, plan.steps, sd) for sd in range(plan.seeds)])
    plat_runs = [_train(t0, "adam", lr_hi, plan.steps, sd, plateau) for sd in range(plan.seeds)]
    plat = np.array([r.evals[-1]["val_loss"] if math.isfinite(r.evals[-1]["val_loss"]) else math.inf
                     for r in plat_runs])
    reduced = sum(r.evals[-1]["lr"] < lr_hi for r in plat_runs)
    s.claims.append(paired_claim(
        "tasks.plateau", np.log10(const), np.log10(plat), hypothesis="ReduceLROnPlateau (halve the lr after an "
        "evaluation without improvement; 10 evaluations per run) ends with a lower validation loss than a constant lr",
        metric=f"log10 final val loss, constant - plateau, Adam lr {lr_hi:g}", population=f"{t0} x {plan.seeds} seeds",
        why_n=why, details={"runs_whose_lr_was_reduced": int(reduced)}))
    s.notes.append(f"ReduceLROnPlateau lowered the lr in {reduced} of {plan.seeds} runs; where it never triggers the "
                   "two runs are identical and the claim reads inconclusive (a tie).")
    s.notes.append("A short budget favours large learning rates (there is no time to profit from a small one): the "
                   "best lr of a reduced run says little about the 1e-4..1e-3 range, which the seeds give for full "
                   "trainings; `optimlab tour --full` trains 6 times longer.")
    notes, links = benchmark_notes()
    s.notes += notes
    s.see_also += links
    xs = {f"{label(n)} ({t})": np.array(ADAM_LRS) for t in plan.tasks for n in ("adam", "rmsprop", "nadam")}
    ys = {f"{label(n)} ({t})": np.median(grids[t][n], axis=1) for t in plan.tasks for n in ("adam", "rmsprop", "nadam")}
    cols = {k: colour(k.split(" (")[0].lower()) for k in xs}
    styles = {k: "-" if k.endswith(f"({plan.tasks[0]})") else "--" for k in xs}
    fig = F.lines(xs, ys, cols, "median final validation loss vs lr (shaded: the seeds' common range 1e-4..1e-3)",
                  "learning rate", "median val loss", logx=True, logy=True, styles=styles, vspan=(1e-4, 1e-3))
    s.figures.append(("tasks_lr.png", fig))
    return s


def keras_section() -> Section:
    """Seed 002's Keras snippets, their optimlab / torch equivalents, and the numbers that show it."""
    from ...optim import SGD

    s = Section("keras", "The seed's Keras snippets in optimlab and torch", SEED2,
                "momentum_optimizer = SGD(learning_rate=0.01, momentum=0.9, nesterov=False); nag_optimizer = "
                "SGD(learning_rate=0.01, momentum=0.9, nesterov=True)",
                "Keras' SGD keeps the learning rate inside the velocity: v = m v - lr g; w = w + v (Nesterov: "
                "w = w + m v - lr g). torch (and optimlab's default) keeps it outside: b = m b + g; w = w - lr b. At a "
                "constant lr they are the same trajectory (v = -lr b). Shown: 200 steps on a 64-parameter quadratic "
                "with random curvatures, Keras' update written out from its documented formula vs optimlab.SGD.")
    rng = np.random.default_rng(3)
    h = torch.from_numpy(rng.uniform(0.1, 10.0, 64))
    w0 = torch.from_numpy(rng.standard_normal(64))
    rows = []
    for nesterov in (False, True):
        w = w0.clone()
        v = torch.zeros(64, dtype=torch.float64)
        for _ in range(200):
            g = h * w
            v = 0.9 * v - 0.01 * g
            w = w + (0.9 * v - 0.01 * g if nesterov else v)
        p = torch.nn.Parameter(w0.clone())
        opt = SGD([p], lr=0.01, momentum=0.9, nesterov=nesterov)
        for _ in range(200):
            opt.zero_grad()
            (0.5 * (h * p * p).sum()).backward()
            opt.step()
        diff = float((p.detach() - w).abs().max())
        name = "nag" if nesterov else "momentum"
        s.claims.append(exact_claim(
            f"keras.{name}", diff, threshold=1e-12, direction="<", n=64,
            hypothesis=f"Keras SGD(learning_rate=0.01, momentum=0.9, nesterov={nesterov}) = optimlab.SGD(lr=0.01, "
            f"momentum=0.9, nesterov={nesterov}) at a constant lr", metric="max |w_200(Keras form) - w_200(optimlab)|",
            population="64 coordinates, 200 steps"))
        rows.append([f"SGD(learning_rate=0.01, momentum=0.9, nesterov={nesterov})",
                     f"optimlab.SGD(params, lr=0.01, momentum=0.9, nesterov={nesterov})",
                     f"torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov={nesterov})", f"{diff:.1e}"])
    rows += [["Adam(learning_rate=0.001) (Keras' default epsilon is 1e-7)", "optimlab.Adam(params, lr=0.001, eps=1e-7)",
              "torch.optim.Adam(params, lr=0.001, eps=1e-7)", "same rule (tested in tests/test_parity_torch.py)"],
             ["RMSprop(learning_rate=0.001, rho=0.9)", "optimlab.RMSprop(params, lr=0.001, alpha=0.9, eps=1e-7)",
              "torch.optim.RMSprop(params, lr=0.001, alpha=0.9, eps=1e-7)", "rho = alpha"],
             ["Adagrad(learning_rate=0.001, initial_accumulator_value=0.1)",
              "optimlab.Adagrad(params, lr=0.001, initial_accumulator_value=0.1, eps=1e-7)",
              "torch.optim.Adagrad(params, lr=0.001, initial_accumulator_value=0.1, eps=1e-7)", "same accumulator"],
             ["Nadam(learning_rate=0.001)", "optimlab.NAdam(params, lr=0.001)", "torch.optim.NAdam(params, lr=0.001)",
              "Keras' momentum schedule differs in detail (torch's momentum_decay)"]]
    s.table = (["Keras (seed 002's form)", "optimlab", "torch.optim", "max |difference| / note"], rows)
    s.notes.append("Only the two SGD rows are the seed's own snippets, and only they are checked numerically here; "
                   "the other rows are the usual correspondences of argument names.")
    return s
