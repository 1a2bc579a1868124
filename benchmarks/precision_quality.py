"""Training quality of low-precision optimizer state: float32 vs bfloat16 vs 8-bit Adam state.

Runs ``optimlab bench`` (the command line itself, in this process) once per task and state dtype,
with the learning rate fixed at the task's default (a one-point grid, so the three storages are
compared at the same LR), then a long run for stability, and writes a markdown table and a plot:

    python benchmarks/precision_quality.py --out out/precision            # the set (~20 min on 2 cores)
    python benchmarks/precision_quality.py --out out/precision --long-steps 10000   # a shorter long run
    python benchmarks/precision_quality.py --out out/precision --report   # table + plot from saved JSON

A storage passes on a task when its median steps to target and its mean final metric both lie
within the float32 seeds' spread (min..max over seeds), widened by one evaluation interval for
steps (the target is only checked every ``eval_every`` steps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from optimlab.cli import main as optimlab_main  # noqa: E402
from optimlab.train.tasks import get_task  # noqa: E402

STATES = ("float32", "bfloat16", "int8")
#: (task, steps) sized so that the whole set fits in 15 minutes on the shared 2-core machine
RUNS = (("digits-mlp", 600), ("digits-cnn", 400), ("char-lstm", 120))
#: the long stability run: (task, default steps; --long-steps changes them)
LONG = ("digits-mlp", 20_000)


def bench_args(task: str, steps: int, state: str, seeds: int, out: Path) -> list[str]:
    lr = f"{get_task(task).default_lr:g}"
    return ["bench", "--task", task, "--optimizers", "adam", "--lr-min", lr, "--lr-max", lr, "--seeds", str(seeds),
            "--steps", str(steps), "--state-dtype", state, "--out", str(out / f"{task}_{state}_{steps}")]


def load(out: Path, task: str, state: str, steps: int) -> dict:
    with open(out / f"{task}_{state}_{steps}" / f"bench_{task}.json") as f:
        return json.load(f)


def spread(runs: list[dict], key: str) -> tuple[float, float] | None:
    values = [r[key] for r in runs if r[key] is not None]
    return (min(values), max(values)) if values else None


def report(out: Path, long_steps: int = LONG[1]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["| task | steps | state | reached | median steps to target | final metric (mean ± sd) | "
             "within float32 spread |", "|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, len(RUNS) + 1, figsize=(5 * (len(RUNS) + 1), 4))
    for ax, (task, steps) in zip(axes, RUNS):
        t = get_task(task)
        base = load(out, task, "float32", steps)["runs"]["adam"]
        final_lo, final_hi = spread(base, "final_metric")
        steps_range = spread(base, "steps_to_target")
        for state in STATES:
            data = load(out, task, state, steps)
            runs, s = data["runs"]["adam"], data["summary"]["adam"]
            final_ok = final_lo <= s["final_metric_mean"] <= final_hi
            if steps_range is None:
                steps_ok = s["steps_to_target_median"] is None
            else:
                med = s["steps_to_target_median"]
                steps_ok = med is not None and steps_range[0] - t.eval_every <= med <= steps_range[1] + t.eval_every
            verdict = "yes" if (final_ok and steps_ok) else "no"
            med = "-" if s["steps_to_target_median"] is None else f"{s['steps_to_target_median']:g}"
            lines.append(f"| {task} | {steps} | {state} | {s['reached']}/{s['seeds']} | {med} | "
                         f"{s['final_metric_mean']:.4f} ± {s['final_metric_std']:.4f} | {verdict} |")
            xs = [e["step"] for e in runs[0]["evals"]]
            med_curve = [statistics.median(r["evals"][i]["metric"] for r in runs) for i in range(len(xs))]
            ax.plot(xs, med_curve, label=state)
            ax.fill_between(xs, [min(r["evals"][i]["metric"] for r in runs) for i in range(len(xs))],
                            [max(r["evals"][i]["metric"] for r in runs) for i in range(len(xs))], alpha=0.15)
        ax.axhline(t.target, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{task} (Adam, lr {t.default_lr:g}): {t.metric_name}")
        ax.set_xlabel("step")
        ax.legend()
    task, steps = LONG[0], long_steps
    ax = axes[-1]
    lines += ["", f"Long run: {task}, {steps} steps, seed 1, Adam lr {get_task(task).default_lr:g}", "",
              "| state | diverged | final metric | best metric | last train loss (mean of last 100 steps) |",
              "|---|---|---|---|---|"]
    for state in STATES:
        run = load(out, task, state, steps)["runs"]["adam"][0]
        metrics = [e["metric"] for e in run["evals"]]
        tail = run["train_loss"][-100:]
        lines.append(f"| {state} | {run['diverged']} | {run['final_metric']:.4f} | {max(metrics):.4f} | "
                     f"{sum(tail) / len(tail):.3g} |")
        ax.plot([e["step"] for e in run["evals"]], [e["val_loss"] for e in run["evals"]], label=state)
    ax.set_yscale("log")
    ax.set_title(f"{task}, {steps} steps: validation loss")
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "precision_quality.png", dpi=90)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/precision"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--report", action="store_true", help="only the table and plot, from saved results")
    ap.add_argument("--long-steps", type=int, default=LONG[1], help=f"steps of the long run on {LONG[0]}")
    args = ap.parse_args()
    if not args.report:
        start = time.perf_counter()
        jobs = [(task, steps, state, args.seeds) for task, steps in RUNS for state in STATES]
        jobs += [(LONG[0], args.long_steps, state, 1) for state in STATES]
        for task, steps, state, seeds in jobs:
            argv = bench_args(task, steps, state, seeds, args.out)
            print("optimlab " + " ".join(argv), flush=True)
            t = time.perf_counter()
            if optimlab_main(argv) != 0:
                raise SystemExit(f"optimlab bench failed: {argv}")
            print(f"  {time.perf_counter() - t:.0f} s", flush=True)
        print(f"all runs: {time.perf_counter() - start:.0f} s")
    print(report(args.out, args.long_steps))
    print(f"plot: {args.out / 'precision_quality.png'}")


if __name__ == "__main__":
    main()
