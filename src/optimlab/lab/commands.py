"""The lab's commands (``optimlab landscapes | compare | sweep | basins | tour``): what runs after
:mod:`optimlab.lab.cli` has parsed and checked the arguments.

Every command computes everything first and only then writes its figures and results file, each
atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from .. import catalogue
from . import _io
from .engine import run, sweep
from .cli import MAX_TRAJECTORIES
from .landscapes import LANDSCAPES, get_landscape

AUTO_LRS = torch.logspace(-5, 0, 26, dtype=torch.float64)


# --- helpers ---------------------------------------------------------------------------------------

@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Any]:
    """A rich progress bar on stderr; ``advance(n)`` moves it. Silent when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(task, n)


def print_table(title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for _, header in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*[_fmt(row.get(key)) for key, _ in columns])
    Console(width=max(120, len(columns) * 14)).print(table)


def _check_start(land, start) -> None:
    if start is not None and not bool(land.in_window(torch.tensor(start, dtype=torch.float64))):
        (x0, x1), (y0, y1) = land.window
        raise ValueError(f"--start must lie in {land.name}'s window x in [{x0:g}, {x1:g}], y in [{y0:g}, {y1:g}], "
                         f"got ({start[0]:g}, {start[1]:g})")


def _display(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the terminal: 'never' instead of -1 for step counts."""
    out = []
    for r in rows:
        r = dict(r)
        for key in ("steps_to_tol", "steps_to_escape"):
            if r.get(key) == -1:
                r[key] = "never"
        out.append(r)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _auto_lr(landscape: str, name: str, start: tuple[float, float], steps: int, schedule: str | None,
             progress=None) -> float:
    """The learning rate (of 26, 1e-5..1) with the lowest final loss, from one batched run."""
    from .metrics import measure

    res = run(landscape, name, [start] * len(AUTO_LRS), steps, lr=AUTO_LRS, schedule=schedule, progress=progress)
    m = measure(res)
    score = torch.where(m["diverged"] | ~torch.isfinite(m["loss_gap"]), torch.inf, m["loss_gap"])
    # ties (several lrs reach the minimum to round-off): take the smallest of them
    best = float(score.min())
    ok = torch.nonzero(score <= best + 1e-12 * max(1.0, abs(best))).flatten()
    return float(AUTO_LRS[ok[0]])


def _resolve_lrs(spec: Any, names: list[str], landscape: str, start, steps: int, schedule,
                 progress=None) -> tuple[dict[str, float], dict[str, str]]:
    lrs, how = {}, {}
    for n in names:
        if isinstance(spec, float):
            lrs[n], how[n] = spec, "given"
        elif isinstance(spec, dict) and n in spec:
            lrs[n], how[n] = spec[n], "given"
        else:
            lrs[n], how[n] = _auto_lr(landscape, n, start, steps, schedule, progress), "auto (best of 26 in 1e-5..1)"
    return lrs, how


RESULT_COLUMNS = [("optimizer", "optimizer"), ("lr", "lr"), ("final_loss", "final loss"),
                  ("distance_to_minimum", "dist. to min"), ("nearest_minimum", "min #"),
                  ("steps_to_tol", "steps to tol"), ("path_length", "path length"),
                  ("oscillation", "sign changes"), ("diverged", "diverged")]


# --- commands --------------------------------------------------------------------------------------

def cmd_landscapes(args: argparse.Namespace) -> int:
    rows = []
    for name, land in LANDSCAPES.items():
        rows.append({"name": name, "formula": land.formula, "minima": "; ".join(f"({x:.3g}, {y:.3g})" for x, y in land.minima),
                     "window": f"x {land.window[0]}, y {land.window[1]}", "about": land.description})
    from rich.console import Console
    from rich.table import Table

    table = Table(title="landscapes (add your own: optimlab.lab.register_landscape)")
    for col in ("name", "formula", "minima", "window", "about"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*r.values())
    Console(width=160).print(table)
    if args.plot:
        from . import plots

        path = _io.save_figure(plots.gallery(), Path(args.plot) / "landscapes.png")
        print(f"wrote {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from . import plots
    from .metrics import rows as metric_rows

    land = get_landscape(args.landscape)
    _check_start(land, args.start)
    start = args.start or land.start
    names = args.optimizers
    t0 = time.perf_counter()
    n_auto = sum(1 for n in names if not (isinstance(args.lr, float) or (isinstance(args.lr, dict) and n in args.lr)))
    runs, table = {}, []
    with progress_bar(args.steps * (len(names) + n_auto), f"compare on {land.name}") as advance:
        lrs, how = _resolve_lrs(args.lr, names, land.name, start, args.steps, args.schedule, lambda t: advance())
        for n in names:
            runs[n] = run(land, n, [start], args.steps, lr=lrs[n], schedule=args.schedule,
                          progress=lambda t: advance(), noise=args.noise)
            table += metric_rows(runs[n], args.tol, lr_choice=how[n])
    labels = {n: f"{n} (lr {lrs[n]:.3g})" for n in names}
    paths = {labels[n]: r.path[:, 0] for n, r in runs.items()}
    colors = {labels[n]: c for n, c in plots.colors_for(names).items()}
    what = f"{args.steps} steps from ({start[0]:g}, {start[1]:g})" + (f", schedule {args.schedule}" if args.schedule else "")
    figs = {
        "contour.png": plots.contour(land, paths, f"{land.name}: {what}", colors),
        "surface.png": plots.surface(land, paths, f"{land.name}: loss surface, {what}", colors),
        "loss.png": plots.loss_curves({labels[n]: r.loss[:, 0] for n, r in runs.items()}, land.min_value,
                                      f"{land.name}: loss - minimum vs step", colors,
                                      ylabel=f"f(w_t) - f*   (f* = {land.min_value:g})"),
    }
    out = Path(args.out)
    for fname, fig in figs.items():
        _io.save_figure(fig, out / fname)
    if args.gif:
        plots.animate(land, paths, str(out / "trajectories.gif"), title=f"{land.name}")
    meta = {"command": "compare", "landscape": land.name, "start": start, "steps": args.steps,
            "schedule": args.schedule, "tol": args.tol, "seconds": round(time.perf_counter() - t0, 3)}
    _io.write_json(out / "results.json", {"meta": meta, "results": table})
    _io.write_csv(out / "results.csv", table)
    print_table(f"{land.name}: {what} (tolerance {args.tol:g} on f - f*)", _display(table), RESULT_COLUMNS)
    print(f"wrote {', '.join(sorted(figs))}{', trajectories.gif' if args.gif else ''}, results.csv, results.json to {out}")
    return 0


def _starts(land, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    (x0, x1), (y0, y1) = land.window
    u = torch.rand(count, 2, generator=g, dtype=torch.float64)
    return torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], dim=1)


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import plots
    from .metrics import measure

    if args.lr_min >= args.lr_max:
        raise ValueError(f"--lr-min must be < --lr-max, got {args.lr_min:g} >= {args.lr_max:g}")
    land = get_landscape(args.landscape)
    _check_start(land, args.start)
    names = args.optimizers
    starts = torch.tensor([args.start], dtype=torch.float64) if args.start else _starts(land, args.starts, args.seed)
    lrs = torch.logspace(math.log10(args.lr_min), math.log10(args.lr_max), args.num_lr, dtype=torch.float64)
    n_traj = len(lrs) * len(starts) * len(names)
    if n_traj > MAX_TRAJECTORIES:
        raise ValueError(f"--num-lr x --starts x optimizers = {n_traj} trajectories (allowed: at most {MAX_TRAJECTORIES})")
    t0 = time.perf_counter()
    with progress_bar(args.steps * len(names), f"sweep on {land.name} ({n_traj} trajectories)") as advance:
        result = sweep(land, names, lrs, starts, args.steps, schedule=args.schedule, progress=lambda n, t: advance(),
                       noise=args.noise)
    seconds = time.perf_counter() - t0
    table, final, div = [], {}, {}
    for n in names:
        m = measure(result.runs[n], args.tol)
        gap = result.grid(n, m["loss_gap"])
        dv = result.grid(n, m["diverged"])
        hit = result.grid(n, m["steps_to_tol"])
        gap_ok = torch.where(dv, torch.nan, gap)
        final[n] = gap_ok.nanmedian(dim=1).values
        div[n] = dv.float().mean(dim=1) > 0.5
        for i, lr in enumerate(lrs.tolist()):
            reached = hit[i] >= 0
            table.append({"optimizer": n, "lr": lr, "median_loss_gap": float(final[n][i]),
                          "diverged_fraction": float(dv[i].float().mean()),
                          "converged_fraction": float(reached.float().mean()),
                          "median_steps_to_tol": float(hit[i][reached].double().median()) if reached.any() else None})
    fig = plots.lr_sweep(lrs, final, div, f"{land.name}: final loss vs learning rate, {len(starts)} start(s), {args.steps} steps",
                         colors=plots.colors_for(names))
    out = Path(args.out)
    _io.save_figure(fig, out / "lr_sweep.png")
    meta = {"command": "sweep", "landscape": land.name, "starts": starts.tolist(), "steps": args.steps,
            "lrs": lrs.tolist(), "schedule": args.schedule, "tol": args.tol, "trajectories": n_traj,
            "seconds": round(seconds, 3)}
    _io.write_json(out / "sweep.json", {"meta": meta, "results": table})
    _io.write_csv(out / "sweep.csv", table)
    best = []
    for n in names:
        rows_n = [r for r in table if r["optimizer"] == n and math.isfinite(r["median_loss_gap"])]
        if rows_n:
            best.append(min(rows_n, key=lambda r: r["median_loss_gap"]))
    print_table(f"{land.name}: best learning rate per optimizer ({n_traj} trajectories in {seconds:.2f} s)", best,
                [("optimizer", "optimizer"), ("lr", "best lr"), ("median_loss_gap", "median f - f*"),
                 ("converged_fraction", "converged"), ("diverged_fraction", "diverged"),
                 ("median_steps_to_tol", "median steps to tol")])
    print(f"wrote lr_sweep.png, sweep.csv, sweep.json to {out}")
    return 0


def cmd_basins(args: argparse.Namespace) -> int:
    from . import plots
    from .metrics import measure

    land = get_landscape(args.landscape)
    names = args.optimizers
    (x0, x1), (y0, y1) = land.window
    xs = torch.linspace(x0, x1, args.grid, dtype=torch.float64)
    ys = torch.linspace(y0, y1, args.grid, dtype=torch.float64)
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    starts = torch.stack([X.flatten(), Y.flatten()], dim=1)
    lrs = {}
    for n in names:
        if isinstance(args.lr, float):
            lrs[n] = args.lr
        elif isinstance(args.lr, dict):
            lrs[n] = args.lr.get(n, catalogue.lab_lr(n, land))
        else:  # None or "auto": the optimizer's default on this landscape
            lrs[n] = catalogue.lab_lr(n, land)
    radius = 0.05 * math.hypot(x1 - x0, y1 - y0)
    reached, table = {}, []
    with progress_bar(args.steps * len(names), f"basins on {land.name}") as advance:
        for n in names:
            res = run(land, n, starts, args.steps, lr=lrs[n], progress=lambda t: advance())
            m = measure(res)
            idx = torch.where(m["diverged"] | (m["distance_to_minimum"] > radius), -1, m["nearest_minimum"])
            reached[f"{n} (lr {lrs[n]:.3g})"] = idx
            row = {"optimizer": n, "lr": lrs[n], "none_or_diverged": float((idx < 0).double().mean())}
            for k in range(len(land.minima)):
                row[f"minimum_{k}"] = float((idx == k).double().mean())
            table.append(row)
    fig = plots.basin_map(land, reached, xs, ys, f"{land.name}: minimum reached from each start ({args.steps} steps; "
                                                  f"grey = diverged or farther than {radius:.2g} from any minimum)")
    out = Path(args.out)
    _io.save_figure(fig, out / "basins.png")
    _io.write_csv(out / "basins.csv", table)
    cols = [("optimizer", "optimizer"), ("lr", "lr")] + [(f"minimum_{k}", f"min {k}") for k in range(len(land.minima))]
    print_table(f"{land.name}: fraction of {len(starts)} starts reaching each minimum", table,
                cols + [("none_or_diverged", "none/diverged")])
    print(f"wrote basins.png, basins.csv to {out}")
    return 0


def cmd_tour(args: argparse.Namespace) -> int:
    from .tour import main as tour_main

    path = tour_main(args.out, gif=not args.no_gif, full=args.full)
    print(f"wrote {path}")
    return 0
