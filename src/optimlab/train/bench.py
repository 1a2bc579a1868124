"""An optimizer benchmark in the spirit of DeepOBS (Schneider et al. 2019) and MLCommons AlgoPerf
(Dahl et al. 2023): tune each optimizer's learning rate, then measure it on fresh seeds.

1. **Tuning** (seed 0): one run per learning rate of a log grid, each with the same step budget.
   The best LR reaches the target in the fewest steps (validation every ``eval_every`` steps);
   ties go to the smaller LR, the one further from divergence (with ties broken by the metric
   instead, the largest stable LR kept winning, and it collapsed on other seeds). If no LR reaches
   the target, the best final validation metric wins.
2. **Measurement** (seeds 1..k, never the tuning seed, so the selection does not flatter the
   winner): full-budget runs at the tuned LR. Reported per optimizer: runs that reached the target,
   median steps- and seconds-to-target over those runs (training time only), final validation
   metric mean and standard deviation over seeds, and the loss curves. A tuned LR at either end of
   the grid is flagged (``lr_at_grid_edge``): the grid may not bracket that optimizer's best LR.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import catalogue
from .loop import RunResult, check_lr, train
from .tasks import Task, get_task


def lr_grid(low: float = 1e-4, high: float = 1.0, per_decade: int = 2) -> list[float]:
    """``low * 10 ** (k / per_decade)`` for every k that stays <= ``high`` (log-spaced)."""
    check_lr(low, "lr_min")
    check_lr(high, "lr_max")
    if high < low:
        raise ValueError(f"lr_max must be >= lr_min ({low:g}), got {high!r}")
    if isinstance(per_decade, bool) or not isinstance(per_decade, int) or not 1 <= per_decade <= 10:
        raise ValueError(f"per_decade must be an integer in [1, 10], got {per_decade!r}")
    n = int(math.floor(per_decade * math.log10(high / low) + 1e-9))
    return [float(f"{low * 10 ** (k / per_decade):.3g}") for k in range(n + 1)]


def _score(task: Task, r: RunResult) -> tuple[float, float, float]:
    """Smaller is better: (steps to target or inf, then for runs that reached the target the smaller
    LR, further from divergence; for runs that did not, the better final metric)."""
    if r.steps_to_target is not None:
        return (r.steps_to_target, r.lr, 0.0)
    value = r.final_metric
    if not math.isfinite(value):
        value = -math.inf if task.higher_is_better else math.inf
    return (math.inf, -value if task.higher_is_better else value, r.lr)


@dataclass
class BenchResult:
    task: str
    target: str
    settings: dict[str, Any]
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)   # optimizer -> numbers
    grid: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # optimizer -> tuning runs
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # optimizer -> measured runs

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "target": self.target, "settings": self.settings, "summary": self.summary,
                "grid": self.grid, "runs": self.runs}


def summarize(task: Task, lr: float, runs: list[RunResult]) -> dict[str, Any]:
    hit = [r for r in runs if r.steps_to_target is not None]
    finals = [r.final_metric for r in runs]
    finite = [v for v in finals if math.isfinite(v)]
    return {
        "lr": lr,
        "seeds": len(runs),
        "reached": len(hit),
        "steps_to_target_median": statistics.median(r.steps_to_target for r in hit) if hit else None,
        "seconds_to_target_median": statistics.median(r.seconds_to_target for r in hit) if hit else None,
        "final_metric_mean": statistics.fmean(finite) if finite else math.nan,
        "final_metric_std": statistics.stdev(finite) if len(finite) > 1 else 0.0 if finite else math.nan,
        "diverged": sum(r.diverged for r in runs),
        "seconds_mean": statistics.fmean(r.seconds for r in runs),
    }


def tune(task: Task | str, optimizer: str, grid: list[float], steps: int | None = None, mode=None,
         schedule: str = "none", callback: Callable[[str], None] | None = None,
         state_dtype: Any = None) -> tuple[RunResult, list[RunResult]]:
    """One seed-0 run per grid LR (stopped at the target); returns (best run, all runs), best by
    fewest steps to target, then the smaller LR (or, if none reached it, the best final metric)."""
    task = get_task(task) if isinstance(task, str) else task
    runs = []
    for lr in grid:
        runs.append(train(task, optimizer, lr, mode, steps, schedule, seed=0, stop_at_target=True,
                          state_dtype=state_dtype))
        if callback:
            callback(f"tune {optimizer} lr={lr:g}")
    return min(runs, key=lambda r: _score(task, r)), runs


def run_bench(task: Task | str, optimizers: list[str], grid: list[float], steps: int | None = None,
              seeds: int = 3, mode=None, schedule: str = "none",
              callback: Callable[[str], None] | None = None, state_dtype: Any = None) -> BenchResult:
    """Tune and measure every optimizer on ``task``; ``callback(message)`` is called after each run.
    ``state_dtype`` (see :mod:`optimlab.faults`) is given to every optimizer."""
    task = get_task(task) if isinstance(task, str) else task
    optimizers = [catalogue.get(name).name for name in optimizers]
    if not optimizers:
        raise ValueError("optimizers must name at least one optimizer")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 100:
        raise ValueError(f"seeds must be an integer in [1, 100], got {seeds!r}")
    if not grid:
        raise ValueError("grid must hold at least one learning rate")
    steps = task.budget_steps if steps is None else steps
    common = {"steps": steps, "mode": mode, "schedule": schedule, "state_dtype": state_dtype}
    result = BenchResult(task.name, task.target_text,
                         {"grid": grid, "steps": steps, "seeds": list(range(1, seeds + 1)), "tuning_seed": 0,
                          "mode": str(mode) if mode else "task default", "schedule": schedule,
                          "eval_every": task.eval_every, "state_dtype": str(state_dtype or "default")})
    for name in optimizers:
        best, tuning = tune(task, name, grid, callback=callback, **common)
        result.grid[name] = [r.to_dict(curves=False) for r in tuning]
        measured = []
        for seed in range(1, seeds + 1):
            measured.append(train(task, name, best.lr, seed=seed, **common))
            if callback:
                callback(f"measure {name} seed={seed}")
        result.summary[name] = summarize(task, best.lr, measured)
        # a best LR on the edge of the grid means the grid may not contain the optimum
        result.summary[name]["lr_at_grid_edge"] = len(grid) > 1 and best.lr in (grid[0], grid[-1])
        result.runs[name] = [r.to_dict() for r in measured]
    return result


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


SUMMARY_COLUMNS = ["optimizer", "lr", "lr_at_grid_edge", "seeds", "reached", "steps_to_target_median", "seconds_to_target_median",
                   "final_metric_mean", "final_metric_std", "diverged", "seconds_mean"]


def write_results(result: BenchResult, out, stem: str) -> list:
    """Write ``<stem>.json`` (everything, with curves), ``<stem>.csv`` (summary) and two PNGs.

    All are rendered first and each is written through a temporary file and ``os.replace``.
    """
    import csv
    import json
    from pathlib import Path

    from .._atomic import atomic_write_all
    from . import plots
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(result.task)
    payload = json.dumps(_jsonable(result.to_dict()), indent=1)

    def write_json(tmp):
        with open(tmp, "w") as f:
            f.write(payload)

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["task", "target", *SUMMARY_COLUMNS])
            for name, s in result.summary.items():
                w.writerow([result.task, result.target, name,
                            *[("" if s[c] is None else f"{s[c]:.6g}" if isinstance(s[c], float) else s[c])
                              for c in SUMMARY_COLUMNS[1:]]])
    paths = [out / f"{stem}.json", out / f"{stem}.csv", out / f"{stem}_curves.png", out / f"{stem}_lr_grid.png"]
    atomic_write_all([(paths[0], write_json), (paths[1], write_csv),
                      (paths[2], lambda tmp: plots.bench_curves(task, result.summary, result.runs, tmp)),
                      (paths[3], lambda tmp: plots.bench_grid(task, result.grid, tmp))])
    return paths
