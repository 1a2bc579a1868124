"""Figures of the training lab (matplotlib, Agg): benchmark curves, LR-grid tuning, the LR range
test and per-layer diagnostics. Colours are the Okabe-Ito palette (colour-blind safe), each series
also has its own line style; every file is written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: Okabe & Ito (2008), yellow last (it is faint on white)
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
STYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), "-"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    from .._atomic import atomic_write
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    _plt().close(fig)


def _style(i: int) -> dict:
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": STYLES[i % len(STYLES)]}


def _smooth(values, beta: float = 0.98) -> np.ndarray:
    from ..ewma import ewma_series
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    finite = np.where(np.isfinite(v), v, np.nan)
    return ewma_series(np.nan_to_num(finite, nan=np.nanmax(finite) if np.isfinite(finite).any() else 0.0).tolist(),
                       beta=beta).numpy()


def _band(ax, curves: list[np.ndarray], x: np.ndarray, label: str, style: dict) -> None:
    """Median over seeds as a line (robust to one collapsed seed), min..max over seeds as a shaded
    band (common length only)."""
    n = min(len(c) for c in curves)
    stack = np.vstack([c[:n] for c in curves])
    ax.plot(x[:n], np.nanmedian(stack, 0), linewidth=1.6, label=label, **style)
    if len(curves) > 1:
        ax.fill_between(x[:n], np.nanmin(stack, 0), np.nanmax(stack, 0), color=style["color"], alpha=0.1, linewidth=0)


def bench_curves(task, summary: dict, runs: dict, path: Path, title: str | None = None) -> None:
    """Training loss (EWMA) and validation metric vs step for each optimizer at its tuned LR:
    median over seeds, with the min..max band over seeds."""
    plt = _plt()
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(12, 5), dpi=110)
    seeds = max(len(v) for v in runs.values())
    for i, (name, seed_runs) in enumerate(runs.items()):
        st = _style(i)
        label = f"{name} (lr={summary[name]['lr']:.3g})"
        longest = max(len(r["train_loss"]) for r in seed_runs)
        _band(ax_loss, [_smooth(r["train_loss"]) for r in seed_runs], np.arange(1, longest + 1), label, st)
        evals = max((r["evals"] for r in seed_runs), key=len)
        _band(ax_metric, [np.array([e["metric"] if e["metric"] is not None else np.nan for e in r["evals"]], dtype=float)
                          for r in seed_runs], np.array([e["step"] for e in evals]), label, st)
    ax_metric.axhline(task.target, color="0.4", linewidth=1, linestyle=(0, (6, 3)), label=f"target {task.target_text}")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (EWMA beta=0.98, bias-corrected)")
    spread = f"median of {seeds} seeds, band = min..max" if seeds > 1 else "one seed"
    ax_loss.set_title(f"Training loss ({spread})")
    ax_metric.set_xlabel("step")
    ax_metric.set_ylabel(task.metric_name)
    ax_metric.set_title(f"{task.metric_name} ({spread})")
    if not task.higher_is_better:
        ax_metric.set_yscale("log")
    for ax in (ax_loss, ax_metric):
        ax.grid(True, which="both", alpha=0.3)
    ax_metric.legend(fontsize=8)
    fig.suptitle(title or f"{task.name}: each optimizer at its tuned learning rate ({task.description})", fontsize=11)
    _save(fig, path)


def bench_grid(task, grid_results: dict, path: Path) -> None:
    """Tuning runs against the learning rate, per optimizer: steps to target, and the metric."""
    plt = _plt()
    fig, (ax_steps, ax_metric) = plt.subplots(1, 2, figsize=(12, 5), dpi=110, sharex=True)
    for i, (name, rows) in enumerate(grid_results.items()):
        lrs = [r["lr"] for r in rows]
        steps = [r["steps_to_target"] if r["steps_to_target"] is not None else np.nan for r in rows]
        vals = [r["final_metric"] if r["final_metric"] is not None and math.isfinite(r["final_metric"]) else np.nan
                for r in rows]
        ax_steps.plot(lrs, steps, marker="o", markersize=4, linewidth=1.5, label=name, **_style(i))
        ax_metric.plot(lrs, vals, marker="o", markersize=4, linewidth=1.5, label=name, **_style(i))
    target = ax_metric.axhline(task.target, color="0.4", linewidth=1, linestyle=(0, (6, 3)),
                               label=f"target {task.target_text}")
    ax_metric.legend(handles=[target], fontsize=8)
    if ax_steps.has_data() and any(np.isfinite(line.get_ydata(orig=False)).any() for line in ax_steps.lines):
        ax_steps.set_yscale("log")
    ax_steps.set_ylabel("steps to target (gap = not reached)")
    ax_steps.set_title("Steps to target per learning rate")
    ax_metric.set_ylabel(f"{task.metric_name} when the run stopped")
    ax_metric.set_title("Validation metric (runs stop at the target; gap = diverged)")
    if not task.higher_is_better:
        ax_metric.set_yscale("log")
    for ax in (ax_steps, ax_metric):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.grid(True, which="both", alpha=0.3)
    ax_steps.legend(fontsize=8)
    fig.suptitle(f"{task.name}: learning-rate tuning grid (seed 0)", fontsize=11)
    _save(fig, path)


def lr_finder(result, title: str, path: Path) -> None:
    """The range test: raw and smoothed loss against the learning rate, with the suggestions."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    ax.plot(result.lrs, result.losses, color="0.65", linewidth=0.8, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color=PALETTE[0], linewidth=2, label=f"EWMA (beta={result.beta:g}), bias-corrected")
    for i, (rule, lr) in enumerate(result.suggestions.items()):
        if lr is None:
            continue
        chosen = " (suggested)" if rule == result.rule else ""
        ax.axvline(lr, color=PALETTE[1 + i], linestyle=STYLES[1 + i], linewidth=1.6,
                   label=f"{rule}: lr={lr:.3g}{chosen}")
    ax.set_xscale("log")
    finite = [v for v in result.smoothed + result.losses if math.isfinite(v)]
    if finite:  # from the lowest loss to a little above the starting plateau (divergence is off-scale)
        low, high = min(finite), max(result.smoothed[:10])
        pad = max(high - low, 1e-6 * max(abs(high), 1.0))
        ax.set_ylim(low - 0.05 * pad, high + 0.4 * pad)
    ax.set_xlabel("learning rate (exponential ramp)")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def diagnostics(rows: list[dict], title: str, path: Path, lr: float | None = None) -> None:
    """Per layer: update/parameter norm ratio, and the effective step size's median and 25-75% band."""
    plt = _plt()
    fig, (ax_ratio, ax_step) = plt.subplots(1, 2, figsize=(12, 5), dpi=110)
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    for i, layer in enumerate(layers):
        mine = [r for r in rows if r["layer"] == layer]
        steps = [r["step"] for r in mine]
        st = _style(i)
        ax_ratio.plot(steps, [r["update_ratio"] for r in mine], linewidth=1.4, label=layer, **st)
        ax_step.plot(steps, [r["step_size_q50"] for r in mine], linewidth=1.4, label=layer, **st)
        ax_step.fill_between(steps, [r["step_size_q25"] for r in mine], [r["step_size_q75"] for r in mine],
                             color=st["color"], alpha=0.15, linewidth=0)
    if lr is not None:
        ax_step.axhline(lr, color="0.3", linewidth=1, linestyle=(0, (6, 3)), label=f"lr = {lr:g}")
        ax_step.legend(fontsize=8)
    ax_ratio.set_title("||update|| / ||parameter|| per layer")
    ax_ratio.set_ylabel("update / parameter norm")
    ax_step.set_title("effective step |dw| / |g| per element (median, 25-75%)")
    values = np.array([r[c] for r in rows for c in ("step_size_q25", "step_size_q75")], dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() < 10:  # e.g. plain SGD: all equal to lr
        mid = math.sqrt(values.max() * values.min())    # show a decade, not float rounding
        ax_step.set_ylim(mid / math.sqrt(10), mid * math.sqrt(10))
    ax_step.set_ylabel("|dw| / |g|")
    for ax in (ax_ratio, ax_step):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
    ax_ratio.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)
