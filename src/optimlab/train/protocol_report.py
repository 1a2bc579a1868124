"""The report of ``optimlab protocol``: ``report.md``, ``report.html``, figures and ``results.json``.

The Markdown and the HTML are rendered from one list of blocks (heading, paragraph, table, image),
so the two never disagree; every file is written atomically.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from .protocol import dumps, jsonable
from .tasks import get_task


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x):
            return "-"
        if math.isinf(x):
            return "miss" if x > 0 else "-inf"
        return f"{x:.{digits}g}"
    return str(x)


def _interval(point: float, rng: list[float], digits: int = 3) -> str:
    if not math.isfinite(point) and all(not math.isfinite(v) for v in rng):
        return _fmt(point, digits)
    return f"{_fmt(point, digits)} [{_fmt(rng[0], digits)}, {_fmt(rng[1], digits)}]"


def blocks(result: dict, command: str, date: str, label: str = "") -> list[tuple]:
    proto, env, tasks = result["protocol"], result["environment"], result["tasks"]
    opts = list(proto["optimizers"])
    b: list[tuple] = [("h1", "Optimizer benchmark: tuned fairly, scored by time to target" + (f" ({label})" if label else ""))]
    b.append(("p", f"Command: `{command}`  \nDate: {date}  \nHardware: {env['cpu']}, {env['cores']} cores "
                   f"(shared machine; load average {', '.join(f'{v:.1f}' for v in env.get('load_average') or [])} at the "
                   f"start and {', '.join(f'{v:.1f}' for v in env.get('load_average_end') or [])} at the end of the "
                   "command that wrote this report); "
                   f"torch {env['torch']}, Python {env['python']}, {env['threads_per_worker']} torch thread per worker, "
                   f"{result['workers']} worker process(es)."))
    b.append(("p", f"Budget: {_budget_text(proto)}. Spent: {result['budget']['runs']} training runs, "
                   f"{result['budget']['cpu_seconds']:.0f} CPU-seconds of training processes, "
                   f"{result['budget'].get('span_seconds', math.nan):.0f} s wall clock from the first trial's start to "
                   f"the last one's end; {result['budget'].get('retried', 0)} interrupted trial(s) re-run after a restart."))
    spaces = sorted({"; ".join(f"{k} {v}" for k, v in p["space"].items())
                     for t in tasks.values() for p in t["optimizers"].values()})
    b.append(("p", "Protocol (see `optimlab.train.protocol`): per (task, optimizer) "
                   f"{proto['studies']} studies of {proto['trials']} scrambled-Sobol points of the declared space "
                   f"(searched, as stored with the trials: {' | '.join(spaces)}; other hyperparameters at library "
                   "defaults), each trained "
                   "once on the study's seed and scored by final validation metric; each study's best point "
                   f"re-trained on {proto['eval_seeds']} fresh seeds. Target per task: the "
                   f"{proto['target_quantile']:.0%}-worst final metric of the best tuned optimizer (the baseline). "
                   "Time to target = training seconds (evaluation excluded) at the first validation meeting it; "
                   "a study's time is the median over its seeds, a miss is infinite; an optimizer's time is the "
                   "median over studies [range over studies]. Seconds are wall-clock training time on a shared "
                   "machine: the steps columns are the load-independent view."))
    edges = [f"{o} on {name}, study {st['study']} ({', '.join(st['edge'])}: {_fmt(st['lr'])})"
             for name, t in tasks.items() for o in opts for st in t["optimizers"][o]["studies"] if st.get("edge")]
    b.append(("p", "Best values on the edge of the search range (in the outermost "
                   f"1/{proto['trials']} of the range, beyond which the study sampled nothing: a better value may "
                   "lie outside, so the range is too narrow there; marked (edge) in the tables): "
                   + ("; ".join(edges) + "." if edges else "none: every study's best value lies inside its range.")))
    b.append(("h2", "Performance profile and score"))
    b.append(("p", f"Fraction of tasks solved within tau times the fastest optimizer's time, tau in "
                   f"[1, {proto['tau_max']:g}]; score = area under the profile / {proto['tau_max'] - 1:g} "
                   "(1: fastest on every task; 0: never within the factor)."))
    solved = {o: sum(math.isfinite(tasks[t]["optimizers"][o]["seconds"]) for t in tasks) for o in opts}
    order = sorted(opts, key=lambda o: -result["score_seconds"][o])
    b.append(("table", ["optimizer", "score (seconds)", "score (steps)", "tasks solved"],
              [[o, f"{result['score_seconds'][o]:.3f}", f"{result['score_steps'][o]:.3f}", f"{solved[o]}/{len(tasks)}"]
               for o in order]))
    b.append(("img", "profile.png", "performance profiles (seconds and steps)"))
    b.append(("h2", "The seed's practical advice, measured"))
    b.append(("table", ["claim", "test", "measured (point [95% interval])", "verdict"],
              [[v["claim"], v["test"], v["numbers"], f"**{v['verdict']}**"] for v in result["verdicts"]]))
    for name, t in tasks.items():
        task = get_task(name)
        tags = [s for s, on in (("held out", t["held_out"]), ("noisy, non-stationary", t["non_stationary"])) if on]
        b.append(("h2", f"{name}" + (f" ({', '.join(tags)})" if tags else "")))
        b.append(("p", f"{task.description}. Target {t['target_text']} (set from {t['baseline']}; the task's own "
                       f"stated target is {task.target_text})."))
        rows = []
        for o in opts:
            p = t["optimizers"][o]
            d = p["default"]
            reached = sum(math.isfinite(v) for v in p["run_steps"])
            rows.append([o, ", ".join(_fmt(s["lr"]) + (" (edge)" if s.get("edge") else "") for s in p["studies"]),
                         _interval(p["seconds"], p["seconds_range"]), _interval(p["steps"], p["steps_range"]),
                         f"{reached}/{len(p['run_steps'])}", _interval(p["final_median"], p["final_range"], 4),
                         f"{_fmt(d['hp'].get('lr'))}: {d['reached']}/{d['seeds']}, "
                         f"{_interval(d['final_median'], d['final_range'], 4)}",
                         str(p["diverged"])])
        b.append(("table", ["optimizer", "tuned lr per study", "seconds to target", "steps to target",
                            "eval runs reaching", f"final {task.metric_name}", "at defaults: lr: reached, final",
                            "diverged runs"], rows))
        b.append(("img", f"sensitivity_{name}.png", f"lr sensitivity on {name}"))
    return b


def _budget_text(proto: dict) -> str:
    from .protocol import Protocol
    return Protocol(**{**proto, "tasks": tuple(proto["tasks"]), "optimizers": tuple(proto["optimizers"])}).budget_text()


def to_markdown(blocks_: list[tuple], image_prefix: str = "") -> str:
    out = []
    for kind, *rest in blocks_:
        if kind in ("h1", "h2"):
            out.append(("#" if kind == "h1" else "##") + " " + rest[0])
        elif kind == "p":
            out.append(rest[0])
        elif kind == "table":
            header, rows = rest
            out.append("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                                 + ["| " + " | ".join(r) + " |" for r in rows]))
        elif kind == "img":
            out.append(f"![{rest[1]}]({image_prefix}{rest[0]})")
    return "\n\n".join(out) + "\n"


def to_html(blocks_: list[tuple]) -> str:
    def inline(text: str) -> str:
        parts = html.escape(text).split("`")
        text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
        parts = text.split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts)).replace("  \n", "<br>")
    body = []
    for kind, *rest in blocks_:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{inline(rest[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{inline(rest[0])}</p>")
        elif kind == "table":
            header, rows = rest
            body.append("<table><tr>" + "".join(f"<th>{inline(h)}</th>" for h in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
        elif kind == "img":
            body.append(f'<img src="{html.escape(rest[0])}" alt="{html.escape(rest[1])}">')
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>optimlab benchmark</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _style(i: int, name: str) -> dict:
    """The catalogue's one colour of optimizer ``name``, and a line style of its own."""
    from .. import catalogue
    from . import plots
    return {"color": catalogue.get(name).colour, "linestyle": plots.STYLES[i % len(plots.STYLES)]}


def plot_profile(result: dict, path) -> None:
    from . import plots
    plt = plots._plt()
    opts = list(result["protocol"]["optimizers"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), dpi=110, sharey=True)
    for ax, kind in zip(axes, ("seconds", "steps")):
        for i, o in enumerate(opts):
            ax.step(result["taus"], result[f"profile_{kind}"][o], where="post", linewidth=1.6,
                    label=f"{o} ({result[f'score_{kind}'][o]:.2f})", **_style(i, o))
        ax.set_xlabel(f"tau (time within tau x the fastest, in {kind})")
        ax.set_title(f"performance profile: {kind} to target")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        # below the axes: inside, the legend hid steps of the profile
        ax.legend(fontsize=8, title="optimizer (score)", loc="upper center", bbox_to_anchor=(0.5, -0.14),
                  ncol=min(4, len(opts)))
    axes[0].set_ylabel("fraction of tasks")
    plots._save(fig, path)


def plot_sensitivity(result: dict, task_name: str, path) -> None:
    """Final metric vs lr of every tuning trial (dots) and, per half-decade bin, the median (line)
    and the interquartile range (band) over the trials in it (different seeds and studies)."""
    from . import plots
    plt = plots._plt()
    task = get_task(task_name)
    t = result["tasks"][task_name]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for i, (o, p) in enumerate(t["optimizers"].items()):
        style = _style(i, o)
        lr = np.array([r["lr"] for r in p["tuning"]], dtype=np.float64)
        final = np.array([np.nan if r["final"] is None else r["final"] for r in p["tuning"]], dtype=np.float64)
        ax.scatter(lr, final, s=10, color=style["color"], alpha=0.5)
        edges = 10 ** np.arange(np.floor(2 * np.log10(lr.min())) / 2, np.log10(lr.max()) + 0.5, 0.5)
        centers, med, q1, q3 = [], [], [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            v = final[(lr >= lo) & (lr < hi)]
            if v.size:
                v = np.where(np.isfinite(v), v, -np.inf if task.higher_is_better else np.inf)
                centers.append(math.sqrt(lo * hi))
                q1_, med_, q3_ = np.quantile(v, [0.25, 0.5, 0.75], method="inverted_cdf")  # no inf - inf
                q1.append(q1_)
                med.append(med_)
                q3.append(q3_)
        ax.plot(centers, med, label=o, linewidth=1.5, **style)
        ax.fill_between(centers, q1, q3, color=style["color"], alpha=0.12, linewidth=0)
    ax.axhline(t["target"], color="grey", linewidth=0.8, linestyle=":", label="target")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"final {task.metric_name}")
    finite = [r["final"] for p in t["optimizers"].values() for r in p["tuning"] if r["final"] is not None]
    if finite:  # clip wrecked runs so the useful range stays readable
        lo, hi = np.quantile(finite, [0.05, 1.0]) if task.higher_is_better else np.quantile(finite, [0.0, 0.95])
        pad = 0.05 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_title(f"{task_name}: lr sensitivity (median, IQR over trials per half decade)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plots._save(fig, path)


def write_report(result: dict, out, command: str, date: str, label: str = "") -> list[Path]:
    """Write results.json, report.md, report.html, profile.png and one sensitivity_TASK.png per task."""
    from .._atomic import atomic_write_all
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    b = blocks(result, command, date, label)
    md, page, payload = to_markdown(b), to_html(b), dumps(result)
    items = [(out / "results.json", lambda tmp: Path(tmp).write_text(payload)),
             (out / "report.md", lambda tmp: Path(tmp).write_text(md)),
             (out / "report.html", lambda tmp: Path(tmp).write_text(page)), *figure_items(result, out)]
    atomic_write_all(items)
    return [p for p, _ in items]


def figure_items(result: dict, folder: Path) -> list:
    """The report's figures as ``(path, write(tmp))`` pairs for :func:`atomic_write_all`: the
    performance profile and one lr-sensitivity plot per task."""
    items = [(folder / "profile.png", lambda tmp: plot_profile(result, tmp))]
    for name in result["tasks"]:
        items.append((folder / f"sensitivity_{name}.png", lambda tmp, name=name: plot_sensitivity(result, name, tmp)))
    return items


#: the committed report of the protocol (``optimlab protocol --docs docs/benchmark.md``); the tour
#: reads the verdicts from the ``summary.json`` beside its figures
DOCS_REPORT = Path(__file__).resolve().parents[3] / "docs" / "benchmark.md"


def summary(result: dict, command: str, date: str, label: str = "") -> dict:
    """What other surfaces (the tour) quote from a report: when and how it was run, the verdicts on
    the seed's advice with their intervals, the scores and the tasks each optimizer solved."""
    tasks = result["tasks"]
    return {"command": command, "date": date, "label": label, "verdicts": result["verdicts"],
            "score_seconds": result["score_seconds"], "score_steps": result["score_steps"],
            "solved": {o: sum(math.isfinite(t["optimizers"][o]["steps"]) for t in tasks.values())
                       for o in result["protocol"]["optimizers"]}, "tasks": len(tasks)}


def read_summary(md_path=DOCS_REPORT) -> dict | None:
    """The summary written beside the report at ``md_path`` (``docs/benchmark/summary.json``), or None
    when there is none (an installed package without the repository's docs)."""
    import json
    path = Path(md_path).with_suffix("") / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_docs_copy(result: dict, md_path, command: str, date: str, label: str = "") -> list[Path]:
    """The Markdown report at ``md_path`` with its figures and ``summary.json`` in the folder
    ``md_path`` without suffix (``docs/benchmark.md`` -> ``docs/benchmark/profile.png``), for
    committing into the docs."""
    import json

    from .._atomic import atomic_write_all
    md_path = Path(md_path)
    folder = md_path.with_suffix("")
    md = to_markdown(blocks(result, command, date, label), image_prefix=f"{folder.name}/")
    short = json.dumps(jsonable(summary(result, command, date, label)), indent=1)
    items = [(md_path, lambda tmp: Path(tmp).write_text(md)),
             (folder / "summary.json", lambda tmp: Path(tmp).write_text(short)), *figure_items(result, folder)]
    atomic_write_all(items)
    return [p for p, _ in items]
