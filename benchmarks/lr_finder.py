"""The LR finder, measured: every suggestion rule scored against the grid-best learning rate.

    ./run python benchmarks/lr_finder.py [--tasks ...] [--optimizers ...] [--seeds K] [--per-decade N]

For each (task, optimizer):

* **ground truth**: every LR of a log grid trained for the task's full budget on seeds 1..K; the
  best LR has the best median final validation metric (ties: the smaller LR);
* **the finder**: the range test (100 steps, 1e-6..10) on seeds 0..K-1; each rule of
  ``optimlab.train.lr_finder.RULES`` (optimlab's ``min/10``, fastai's ``valley``, torch-lr-finder's
  ``steepest``) gives a per-seed suggestion (none when the curve is flat or never turns up) and a
  band (median over seeds);
* **scores per rule**: the band's median within 3x / 10x of the best LR; the median final metric of
  training at the band's median on seeds 1..K, "close" when within ``0.01`` (accuracy) or 5%
  (losses) of the grid-best's; runs wrecked (diverged, or worse than the grid's worst finite
  median); no suggestion; the seed spread (largest / smallest per-seed suggestion).

It prints one table per rule and writes ``OUT/lr_finder.json``; it fails (exit 1) when the default
rule (min/10) is not at least as often within 10x as every other rule, so the default stays earned.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from optimlab.train import get_task, lr_grid, train
from optimlab.train.lr_finder import RULES, find_lr_band


def _median(values):
    return statistics.median(values) if values else math.nan


def measure(task_name: str, optimizer: str, grid: list[float], seeds: int) -> dict:
    task = get_task(task_name)
    sign = 1 if task.higher_is_better else -1

    def median_final(lr: float) -> tuple[float, int]:
        runs = [train(task, optimizer, lr, seed=s) for s in range(1, seeds + 1)]
        finals = [r.final_metric if math.isfinite(r.final_metric) else -sign * math.inf for r in runs]
        return statistics.median(finals), sum(r.diverged for r in runs)

    truth = {lr: median_final(lr)[0] for lr in grid}
    best_lr = max(grid, key=lambda lr: (sign * truth[lr], -lr))
    finite = [v for v in truth.values() if math.isfinite(v)]
    worst = min(finite, key=lambda v: sign * v)
    band = find_lr_band(task, optimizer, seeds=seeds, first_seed=0)
    out = {"task": task_name, "optimizer": optimizer, "best_lr": best_lr, "best_metric": truth[best_lr],
           "grid": {f"{lr:g}": v for lr, v in truth.items()}, "rules": {}}
    for rule in RULES:
        per_seed = [r.suggestions.get(rule) if r.status == "ok" else None for r in band.results]
        values = [v for v in per_seed if v is not None]
        entry = {"per_seed": per_seed, "status": [r.status for r in band.results]}
        if values and band.status == "ok":
            lr = math.exp(statistics.median(math.log(v) for v in values))
            metric, diverged = median_final(lr)
            ratio = lr / best_lr
            tol = 0.01 if task.higher_is_better else 0.05 * abs(truth[best_lr])
            entry.update({"suggestion": lr, "ratio": ratio,
                          "within3": 1 / 3 <= ratio <= 3, "within10": 0.1 <= ratio <= 10, "metric": metric,
                          "close": sign * (truth[best_lr] - metric) <= tol,
                          "wrecked": diverged > 0 or not math.isfinite(metric) or sign * (metric - worst) < 0,
                          "spread": max(values) / min(values)})
        else:
            entry.update({"suggestion": None, "within3": False, "within10": False, "close": False,
                          "wrecked": False, "spread": None})
        out["rules"][rule] = entry
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["digits-mlp", "cancer-logreg", "sparse-logreg", "diabetes-mlp"])
    p.add_argument("--optimizers", nargs="+", default=["sgd", "momentum", "adam"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--per-decade", type=int, default=2)
    p.add_argument("--lr-min", type=float, default=1e-4)
    p.add_argument("--lr-max", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=Path("out/bench/lr_finder"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    grid = lr_grid(args.lr_min, args.lr_max, args.per_decade)
    start = time.time()
    rows = []
    for task in args.tasks:
        for opt in args.optimizers:
            rows.append(measure(task, opt, grid, args.seeds))
            r = rows[-1]
            print(f"{task:14s} {opt:9s} grid-best lr {r['best_lr']:.3g} ({r['best_metric']:.4g}); "
                  + "; ".join(f"{rule} {_fmt(e['suggestion'])}" for rule, e in r["rules"].items()), flush=True)
    n = len(rows)
    print(f"\n{n} (task, optimizer) pairs, grid {grid[0]:g}..{grid[-1]:g} ({len(grid)} lrs) x {args.seeds} seeds, "
          f"{time.time() - start:.0f} s")
    print(f"{'rule':10s} {'within 3x':>10s} {'within 10x':>11s} {'close metric':>13s} {'wrecked':>8s} "
          f"{'no suggestion':>14s} {'median seed spread':>19s}")
    summary = {}
    for rule in RULES:
        entries = [r["rules"][rule] for r in rows]
        spreads = [e["spread"] for e in entries if e["spread"] is not None]
        summary[rule] = {k: sum(e[k] for e in entries) for k in ("within3", "within10", "close", "wrecked")}
        summary[rule]["none"] = sum(e["suggestion"] is None for e in entries)
        summary[rule]["spread"] = _median(spreads)
        s = summary[rule]
        print(f"{rule:10s} {s['within3']:>7d}/{n} {s['within10']:>8d}/{n} {s['close']:>10d}/{n} {s['wrecked']:>8d} "
              f"{s['none']:>11d}/{n} {s['spread']:>18.3g}x")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lr_finder.json").write_text(json.dumps({"grid": grid, "seeds": args.seeds, "rows": rows,
                                                         "summary": summary}, indent=1, default=str))
    best_other = max(summary[r]["within10"] for r in RULES if r != "min/10")
    if summary["min/10"]["within10"] < best_other:
        print(f"FAIL: the default rule min/10 is within 10x less often ({summary['min/10']['within10']}) "
              f"than another rule ({best_other})")
        return 1
    return 0


def _fmt(x) -> str:
    return "none" if x is None else f"{x:.3g}"


if __name__ == "__main__":
    sys.exit(main())
