"""``optimlab train``, ``optimlab lr-find`` and ``optimlab bench``."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

from .. import schedules
from .modes import MODES, Mode


SCHEDULE_HELP = ("learning-rate schedule: constant, step[:N[:GAMMA]], exponential[:GAMMA], cosine, warmup[:N[:START]], "
                 "warmup-cosine[:N[:START]] or plateau[:PATIENCE[:FACTOR]] (see optimlab.schedules)")


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--task", required=True, metavar="NAME", help="task name (`optimlab tasks` lists them)")
    p.add_argument("--mode", default=None, metavar="MODE",
                   help=f"gradient-descent mode: {', '.join(MODES)} (default: the task's)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="examples per step for --mode minibatch (default: the task's)")
    p.add_argument("--seed", type=int, default=0, help="seed of initial weights and batch order (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: these small models run fastest on one)")
    p.add_argument("--out", type=Path, default=Path(out), help=f"folder for results (default {out})")


#: the protocol's default tasks: every small task, the held-out one and the non-stationary one
SMALL_TASKS = ("digits-mlp", "cancer-logreg", "sparse-logreg", "shift-char-lstm", "diabetes-mlp")


def register(sub) -> None:
    from ..cli import lazy

    p = sub.add_parser("tasks", help="list the training tasks (name, model, data, target)")
    p.set_defaults(func=lazy("optimlab.train.cli", "cmd_tasks"))

    p = sub.add_parser("train", help="train one task with one optimizer (progress bar, curves, diagnostics)")
    _common(p, "out/train")
    p.add_argument("--optimizer", default=None, metavar="NAME",
                   help="optimizer name, case-insensitive (`optimlab optimizers` lists them; default: the task's tuned default)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the task's tuned default)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the task's budget)")
    p.add_argument("--schedule", default="constant", metavar="SPEC", help=SCHEDULE_HELP)
    p.add_argument("--eval-every", type=int, default=None, metavar="N", help="steps between validations")
    p.add_argument("--diagnostics-every", type=int, default=10, metavar="N",
                   help="record per-layer diagnostics every N steps (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=lazy("optimlab.train.cli", "cmd_train"))

    p = sub.add_parser("lr-find", help="Smith's learning-rate range test on a task; suggests an LR and plots")
    _common(p, "out/lr_find")
    p.add_argument("--optimizer", default=None, metavar="NAME", help="optimizer name, case-insensitive (`optimlab optimizers` lists them)")
    p.add_argument("--start-lr", type=float, default=1e-6, help="first learning rate of the ramp (default 1e-6)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate of the ramp (default 10)")
    p.add_argument("--steps", type=int, default=100, help="steps of the ramp (default 100)")
    p.add_argument("--rule", default="min/10",
                   help="suggestion rule: min/10 (default), valley (fastai's) or steepest (torch-lr-finder's)")
    p.add_argument("--seeds", type=int, default=3,
                   help="seeds to run the test on; the suggestion is their median, with the range (default 3)")
    p.set_defaults(func=lazy("optimlab.train.cli", "cmd_lr_find"))

    p = sub.add_parser("bench", help="tune each optimizer's LR on a grid, run seeds, report time-to-target")
    _common(p, "out/bench")
    p.add_argument("--optimizers", nargs="+", default=None, metavar="NAME",
                   help="optimizer names, space or comma separated (default: the lab's main set; "
                        "`optimlab optimizers` lists them)")
    p.add_argument("--lr-min", type=float, default=1e-4, help="smallest LR of the tuning grid (default 1e-4)")
    p.add_argument("--lr-max", type=float, default=10.0, help="largest LR of the tuning grid (default 10)")
    p.add_argument("--per-decade", type=int, default=2, help="grid points per decade of LR (default 2)")
    p.add_argument("--steps", type=int, default=None, help="step budget per run (default: the task's)")
    p.add_argument("--seeds", type=int, default=3, help="measured seeds per optimizer (default 3)")
    p.add_argument("--schedule", default="constant", metavar="SPEC", help=SCHEDULE_HELP)
    p.add_argument("--state-dtype", default=None, metavar="NAME",
                   help="optimizer state storage for every optimizer: float32, float64, bfloat16 or int8 "
                        "(default: the parameters' dtype; see docs/precision.md)")
    p.set_defaults(func=lazy("optimlab.train.cli", "cmd_bench"))

    from .. import catalogue
    p = sub.add_parser("protocol", help="the benchmark protocol: Sobol-tuned studies, fresh-seed evaluation, "
                                        "time to target, performance profiles, report (out/bench/report.html)")
    p.add_argument("--tasks", nargs="+", default=list(SMALL_TASKS), metavar="NAME",
                   help=f"tasks (space or comma separated; default: {' '.join(SMALL_TASKS)})")
    p.add_argument("--optimizers", nargs="+", default=list(catalogue.main_names()), metavar="NAME",
                   help=f"optimizers (default: the lab's main set, {' '.join(catalogue.main_names())})")
    p.add_argument("--trials", type=int, default=8, help="quasi-random trials per study (default 8)")
    p.add_argument("--studies", type=int, default=3, help="independent studies per pair (default 3)")
    p.add_argument("--eval-seeds", type=int, default=3, help="fresh seeds per study's best point (default 3)")
    p.add_argument("--default-seeds", type=int, default=3, help="seeds at default hyperparameters (default 3)")
    p.add_argument("--steps", type=int, default=None, help="step budget per run (default: each task's)")
    p.add_argument("--eval-every", type=int, default=None, metavar="N", help="steps between validations")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the studies (default 1)")
    p.add_argument("--storage", default=None,
                   help="database URL of the studies (default sqlite:///OUT/protocol.db; a server URL "
                        "such as postgresql://user@host/db lets workers on many machines share them)")
    p.add_argument("--no-recover", action="store_true",
                   help="do not re-run trials left RUNNING by a killed worker (use while workers on other "
                        "machines are alive)")
    p.add_argument("--label", default="", help="a label for the report's title (e.g. 'reduced run')")
    p.add_argument("--docs", type=Path, default=None, metavar="PATH",
                   help="also write the Markdown report to PATH (e.g. docs/benchmark.md), its figures in "
                        "a folder named after it (docs/benchmark/)")
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="folder for the report (default out/bench)")
    p.add_argument("--space", default="lr", choices=("lr", "full"),
                   help="lr: search the learning rate of each catalogue entry's space, the rest at library "
                        "defaults (default; the small-budget protocol); full: the entry's whole space")
    p.set_defaults(func=lazy("optimlab.train.cli", "cmd_protocol"))


def _setup(args) -> None:
    import torch
    cores = os.cpu_count() or 1
    if isinstance(args.threads, bool) or not 1 <= args.threads <= cores:
        raise ValueError(f"--threads must be in [1, {cores}], got {args.threads}")
    if not 0 <= args.seed < 2**31:
        raise ValueError(f"--seed must be in [0, {2**31 - 1}], got {args.seed}")
    torch.set_num_threads(args.threads)


def _mode(args):
    if args.mode is None:
        if args.batch_size is not None:
            return Mode("minibatch", args.batch_size)
        return None
    if args.mode == "minibatch":
        return Mode("minibatch", args.batch_size if args.batch_size is not None
                    else _task(args.task).default_batch_size or 32)
    return Mode(args.mode, args.batch_size)


def _console():
    from rich.console import Console
    return Console(stderr=True)


def _stdout():
    """The console for result tables: the terminal's width, or 150 columns when piped to a file."""
    import sys

    from rich.console import Console
    return Console(width=None if sys.stdout.isatty() else 150)


def _progress(console):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False)


def _task(name: str):
    from .tasks import get_task
    return get_task(name)


def _optimizer(name: str | None) -> str | None:
    """The catalogue's name for ``name`` (case-insensitive; unknown: ValueError with the closest)."""
    from .. import catalogue
    return None if name is None else catalogue.get(name).name


def cmd_train(args) -> int:
    from rich.table import Table

    from . import plots
    from .diagnostics import LayerDiagnostics
    from .loop import train
    task = _task(args.task)
    args.optimizer = _optimizer(args.optimizer)
    schedules.parse(args.schedule)
    mode = _mode(args)
    _setup(args)
    diag = LayerDiagnostics(args.diagnostics_every)
    console = _console()
    optimizer = args.optimizer or task.default_optimizer
    with _progress(console) as progress:
        bar = progress.add_task(f"{task.name} / {optimizer}", total=args.steps or task.budget_steps, info="",
                                visible=not args.no_progress)
        state = {"metric": ""}

        def callback(step, steps, loss, last):
            if last is not None:
                state["metric"] = f" {task.metric_name} {last['metric']:.4g}"
            if step % 10 == 0 or last is not None:
                progress.update(bar, completed=step, total=steps, info=f"loss {loss:.4g}{state['metric']}")
        r = train(task, args.optimizer, args.lr, mode, args.steps, args.schedule, args.seed, args.eval_every,
                  diagnostics=diag, callback=callback)
        progress.update(bar, completed=r.steps)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"train_{task.name}_{r.optimizer}"
    paths = {k: args.out / f"{stem}{suffix}" for k, suffix in
             [("json", ".json"), ("loss", "_loss.csv"), ("evals", "_evals.csv"), ("curves", "_curves.png"),
              ("diag_csv", "_diagnostics.csv"), ("diag_png", "_diagnostics.png")]}
    from .._atomic import atomic_write_all
    from .bench import _jsonable
    payload = json.dumps(_jsonable(r.to_dict(curves=True)), indent=1)

    def write_loss(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "train_loss"])
            w.writerows([i + 1, f"{v:.6g}"] for i, v in enumerate(r.train_loss))

    def write_evals(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "seconds", "metric", "val_loss", "lr"])
            w.writeheader()
            w.writerows({k: f"{v:.6g}" for k, v in e.items()} for e in r.evals)
    title = f"{task.name}: {r.optimizer} lr={r.lr:g}, {r.mode}, schedule {r.schedule}, seed {r.seed}"
    atomic_write_all([
        (paths["json"], lambda tmp: Path(tmp).write_text(payload)),
        (paths["loss"], write_loss),
        (paths["evals"], write_evals),
        (paths["curves"], lambda tmp: plots.bench_curves(task, {r.optimizer: {"lr": r.lr}},
                                                         {r.optimizer: [r.to_dict()]}, tmp, title)),
        (paths["diag_csv"], diag.write_csv),
        (paths["diag_png"], lambda tmp: plots.diagnostics(diag.rows, f"{title}: per-layer step diagnostics", tmp,
                                                          lr=r.lr)),
    ])

    table = Table(title=f"{task.name}: {r.optimizer} lr={r.lr:g}, {r.mode}, schedule {r.schedule}, seed {r.seed}")
    for col in ("steps", "train seconds", f"final {task.metric_name}", f"target ({task.target_text})",
                "steps to target", "seconds to target"):
        table.add_column(col, justify="right")
    table.add_row(str(r.steps), f"{r.seconds:.2f}", f"{r.final_metric:.4g}" + (" (diverged)" if r.diverged else ""),
                  "reached" if r.steps_to_target else "not reached",
                  str(r.steps_to_target or "-"),
                  f"{r.seconds_to_target:.2f}" if r.seconds_to_target is not None else "-")
    _stdout().print(table)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_lr_find(args) -> int:
    from . import plots
    from .._atomic import atomic_write_all
    from .lr_finder import RULES, find_lr_band
    task = _task(args.task)
    args.optimizer = _optimizer(args.optimizer)
    if args.rule not in RULES:
        raise ValueError(f"--rule must be one of {', '.join(RULES)}, got {args.rule!r}")
    if not 1 <= args.seeds <= 100:
        raise ValueError(f"--seeds must be in [1, 100], got {args.seeds}")
    mode = _mode(args)
    _setup(args)
    optimizer = args.optimizer or task.default_optimizer
    band = find_lr_band(task, optimizer, mode, args.seeds, args.seed, start_lr=args.start_lr, end_lr=args.end_lr,
                        num_steps=args.steps, rule=args.rule)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"lr_find_{task.name}_{optimizer}"

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seed", "lr", "loss", "smoothed_loss"])
            for k, result in enumerate(band.results):
                w.writerows([args.seed + k, f"{a:.6g}", f"{b:.6g}", f"{c:.6g}"]
                            for a, b, c in zip(result.lrs, result.losses, result.smoothed))
    first = band.results[0]
    csv_path, png_path = Path(f"{stem}.csv"), Path(f"{stem}.png")
    title = (f"LR range test: {task.name}, {optimizer}, seed {args.seed} ({len(first.lrs)} steps, "
             f"{'stopped on divergence' if first.stopped_early else 'full ramp'})")
    atomic_write_all([(csv_path, write_csv), (png_path, lambda tmp: plots.lr_finder(first, title, tmp))])
    print(f"{task.name} / {optimizer}: {band.message}")
    for rule in RULES:
        if rule != band.rule and (b := band.band(rule)) is not None:
            print(f"  rule {rule}: median {b[0]:.3g}, range {b[1]:.3g} .. {b[2]:.3g}")
    print(f"wrote {csv_path}, {png_path}")
    return 0


def cmd_bench(args) -> int:
    from rich.table import Table

    from .bench import lr_grid, run_bench, write_results
    task = _task(args.task)
    from .. import catalogue
    given = args.optimizers or list(catalogue.main_names())
    names = [_optimizer(n) for item in given for n in item.split(",") if n]
    schedules.parse(args.schedule)
    grid = lr_grid(args.lr_min, args.lr_max, args.per_decade)
    mode = _mode(args)
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    state_dtype = None
    if args.state_dtype is not None:
        from .. import faults
        from .._checks import check_choice
        check_choice("--state-dtype", args.state_dtype, tuple(faults.STATE_DTYPE_NAMES))
        state_dtype = faults.STATE_DTYPE_NAMES[args.state_dtype]
    _setup(args)
    total = len(names) * (len(grid) + args.seeds)
    console = _console()
    with _progress(console) as progress:
        bar = progress.add_task(f"bench {task.name}", total=total, info="")
        result = run_bench(task, names, grid, args.steps, args.seeds, mode, args.schedule,
                           callback=lambda msg: progress.update(bar, advance=1, info=msg), state_dtype=state_dtype)
    paths = write_results(result, args.out, f"bench_{task.name}")
    table = Table(title=f"{task.name}: target {task.target_text}; LR tuned on {len(grid)} values "
                        f"{grid[0]:g}..{grid[-1]:g} (seed 0), measured on seeds 1..{args.seeds}, "
                        f"{result.settings['steps']} steps, mode {result.settings['mode']}, schedule {args.schedule}"
                        + (f", state_dtype {args.state_dtype}" if args.state_dtype else ""))
    for col in ("optimizer", "tuned lr", "reached", "median steps to target", "median seconds to target",
                f"final {task.metric_name} (mean ± sd)", "diverged"):
        table.add_column(col, justify="right")
    for name, s in result.summary.items():
        table.add_row(name, f"{s['lr']:.3g}" + (" (grid edge)" if s["lr_at_grid_edge"] else ""), f"{s['reached']}/{s['seeds']}",
                      "-" if s["steps_to_target_median"] is None else f"{s['steps_to_target_median']:g}",
                      "-" if s["seconds_to_target_median"] is None else f"{s['seconds_to_target_median']:.2f}",
                      f"{s['final_metric_mean']:.4g} ± {s['final_metric_std']:.2g}", str(s["diverged"]))
    _stdout().print(table)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_protocol(args) -> int:
    import datetime
    import shlex
    import sys

    from .protocol import Protocol, run_protocol
    from .protocol_report import write_docs_copy, write_report
    split = [n for item in args.tasks for n in item.split(",") if n], [n for item in args.optimizers
                                                                       for n in item.split(",") if n]
    protocol = Protocol(tuple(split[0]), tuple(split[1]), args.trials, args.studies, args.eval_seeds,
                        args.default_seeds, args.steps, args.eval_every, space=args.space)
    args.out.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{(args.out / 'protocol.db').resolve()}"
    console = _console()
    console.print(f"budget: {protocol.budget_text()}; {args.workers} worker(s); storage {url}")
    done = {"n": 0}

    def on_trial(study, trial):
        done["n"] += 1
        if done["n"] % 10 == 0:
            console.print(f"{done['n']} runs done (last: {study} #{trial.number})")
    result = run_protocol(protocol, url, args.workers, recover_stale=not args.no_recover, on_trial=on_trial,
                          log=console.print)
    command = "optimlab " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "optimlab protocol"
    date = result["budget"].get("started") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    paths = write_report(result, args.out, command, date, args.label)
    if args.docs is not None:
        paths += write_docs_copy(result, args.docs, command, date, args.label)
    for name, score in sorted(result["score_seconds"].items(), key=lambda kv: -kv[1]):
        print(f"{name:10s} score (seconds) {score:.3f}  (steps) {result['score_steps'][name]:.3f}")
    for v in result["verdicts"]:
        print(f"{v['claim']}: {v['verdict']} ({v['numbers']})")
    print(f"spent {result['budget']['runs']} runs, {result['budget']['cpu_seconds']:.0f} CPU-s, "
          f"{result['wall_seconds']:.0f} s wall")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_tasks(args) -> int:
    from rich.table import Table

    from .tasks import TASKS

    table = Table(title="training tasks (optimlab train --task NAME)")
    for header in ("name", "what it is", "target", "default optimizer", "default lr"):
        table.add_column(header)
    for task in TASKS.values():
        table.add_row(task.name, task.description, f"{task.metric_name} {'>=' if task.higher_is_better else '<='} {task.target}",
                      task.default_optimizer, f"{task.default_lr:g}")
    _stdout().print(table)
    return 0
