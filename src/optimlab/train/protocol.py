"""``optimlab protocol``: an optimizer benchmark tuned fairly and scored by time to result.

It follows the rules credible comparisons use (MLCommons AlgoPerf, Dahl et al. 2023; DeepOBS,
Schneider et al. 2019; Schmidt et al. 2021, "Descending through a Crowded Valley"):

1. **Declared search space and budget.** Each (task, optimizer) gets ``studies`` independent
   studies; a study evaluates ``trials`` quasi-random points (a scrambled Sobol sequence seeded by
   the study) of the optimizer's declared space (:func:`optimlab.train.space.search_space`), each
   trained once on the study's seed for the task's full step budget and scored by its final
   validation metric. The budget (runs, and the CPU seconds spent) is printed and reported.
2. **Evaluation on fresh seeds.** The best point of each study is trained again on
   ``eval_seeds`` seeds that no study tuned on; each optimizer is also run at its library default
   hyperparameters on ``default_seeds`` seeds.
3. **A target from the best tuned baseline.** Per task, the optimizer whose evaluation runs have
   the best median final metric is the baseline; the target is the worse-quartile (25th
   percentile of "goodness") of that optimizer's final metrics, a value the baseline's runs
   reach at least three times in four.
4. **Time to target, misses infinite.** A run's time (training seconds, evaluation excluded) and
   steps to the target are those of the first validation that meets it, infinity if none does.
   A study's time is the MEDIAN over its evaluation seeds (one lucky crossing does not count);
   an optimizer's time on a task is the median over its studies, reported with the range.
5. **Performance profile** (Dolan & Moré 2002, as AlgoPerf): ``rho_o(tau)`` is the fraction of
   tasks on which optimizer o's time is within ``tau`` times the best optimizer's, for tau in
   [1, tau_max]; the score is the area under it, normalised to [0, 1]:
   ``score_o = mean over tasks of max(0, tau_max - max(1, r)) / (tau_max - 1)`` for
   ``r = t_o / min t``, 0 where ``r > tau_max`` or o missed.

Every unit of work -- a tuning trial, an evaluation run, a default run -- is an Optuna trial
enqueued with fixed parameters in a shared storage (SQLite by default, any database URL), and
worker processes pop waiting trials until none is left. A worker killed mid-trial leaves it
RUNNING; on restart (``recover``) it is marked FAIL and its parameters are enqueued again, so a
killed-and-restarted study loses no point of its sequence and runs none twice.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .tasks import get_task


@dataclass(frozen=True)
class Protocol:
    """What is run: tasks x optimizers, the per-study trial budget and the seeds."""

    tasks: tuple[str, ...]
    optimizers: tuple[str, ...]
    trials: int = 8
    studies: int = 3
    eval_seeds: int = 3
    default_seeds: int = 3
    steps: int | None = None        # None: each task's own budget_steps
    eval_every: int | None = None   # None: each task's own
    tau_max: float = 4.0
    target_quantile: float = 0.25
    space: str = "lr"               # see optimlab.train.space.search_space

    def __post_init__(self) -> None:
        from .. import catalogue
        from .space import SPACES
        if not self.tasks or not self.optimizers:
            raise ValueError("tasks and optimizers must each name at least one")
        # canonical names (case and aliases resolved), so every study is named one way
        object.__setattr__(self, "tasks", tuple(get_task(name).name for name in self.tasks))
        object.__setattr__(self, "optimizers", tuple(catalogue.get(name).name for name in self.optimizers))
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {', '.join(SPACES)}, got {self.space!r}")
        for name in ("tasks", "optimizers"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat a name, got {list(values)}")
        for name, low, high in (("trials", 1, 1024), ("studies", 1, 100), ("eval_seeds", 1, 100),
                                ("default_seeds", 1, 100)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        for name in ("steps", "eval_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
        if not (isinstance(self.tau_max, (int, float)) and 1 < self.tau_max <= 100):
            raise ValueError(f"tau_max must be a number in (1, 100], got {self.tau_max!r}")
        if not (isinstance(self.target_quantile, (int, float)) and 0 <= self.target_quantile <= 0.5):
            raise ValueError(f"target_quantile must be a number in [0, 0.5], got {self.target_quantile!r}")

    def runs_per_pair(self) -> int:
        return self.studies * (self.trials + self.eval_seeds) + self.default_seeds

    def budget_text(self) -> str:
        pairs = len(self.tasks) * len(self.optimizers)
        return (f"{len(self.tasks)} tasks x {len(self.optimizers)} optimizers; per pair {self.studies} studies x "
                f"{self.trials} quasi-random trials + {self.studies} x {self.eval_seeds} evaluation seeds + "
                f"{self.default_seeds} default-hyperparameter seeds = {self.runs_per_pair()} runs; "
                f"{pairs * self.runs_per_pair()} runs in all")


# ----------------------------------------------------------------------------- seeds and points

def tuning_seed(study: int) -> int:
    return study


def eval_seed(protocol: Protocol, study: int, k: int) -> int:
    return 1000 + study * protocol.eval_seeds + k


def default_seed(k: int) -> int:
    return 2000 + k


def sobol_points(space: dict, n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` points of a scrambled Sobol sequence (seed ``seed``) mapped into ``space``."""
    from scipy.stats import qmc

    from .space import point
    with warnings.catch_warnings():  # n need not be a power of two (the balance warning)
        warnings.simplefilter("ignore", UserWarning)
        unit = qmc.Sobol(d=len(space), scramble=True, seed=seed).random(n)
    return [point(space, [float(x) for x in u]) for u in unit]


def study_names(protocol: Protocol, phase: str) -> list[str]:
    """Study names of one phase: ``tune`` (one per study), ``default`` or ``eval`` (one per pair)."""
    out = []
    for task in protocol.tasks:
        for opt in protocol.optimizers:
            if phase == "tune":
                out += [f"tune/{task}/{opt}/{s}" for s in range(protocol.studies)]
            else:
                out.append(f"{phase}/{task}/{opt}")
    return out


# ----------------------------------------------------------------------------- storage and work queue

def _optuna():
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _storage(url: str):
    """The shared Optuna storage; a SQLite file runs in WAL mode with ``synchronous=NORMAL`` (a commit
    survives the death of its process, only an OS crash may lose the last ones): a full fsync per
    commit cost about 0.7 s per trial on the loaded test machine."""
    from .. import tune
    storage = tune.storage_for(url)
    engine = getattr(storage, "engine", None)
    if url.startswith("sqlite") and engine is not None:
        import sqlalchemy

        def pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
        sqlalchemy.event.listen(engine, "connect", pragmas)
        engine.dispose()  # pooled connections opened before the listener are replaced
    return storage


@contextlib.contextmanager
def _enqueue_lock(url: str):
    from ..tune import _schema_lock
    with _schema_lock(url):
        yield


def _load(storage, name: str, create: bool = False):
    optuna = _optuna()
    if create:
        return optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
    return optuna.load_study(study_name=name, storage=storage)


def _enqueue_all(study, items: Iterable[tuple[dict, dict]]) -> None:
    """Enqueue every (params, user_attrs) in a study that holds no trial yet (idempotent)."""
    if study.trials:
        return
    for params, attrs in items:
        study.enqueue_trial(params, user_attrs=attrs)


def prepare_tuning(protocol: Protocol, url: str) -> None:
    """Enqueue every tuning point and every default-hyperparameter run (once per study)."""
    from .space import default_hparams, search_space
    storage = _storage(url)
    with _enqueue_lock(url):
        for task in protocol.tasks:
            for opt in protocol.optimizers:
                space = search_space(opt, protocol.space)
                for s in range(protocol.studies):
                    points = sobol_points(space, protocol.trials, tuning_seed(s))
                    _enqueue_all(_load(storage, f"tune/{task}/{opt}/{s}", create=True),
                                 [(p, {"task": task, "optimizer": opt, "seed": tuning_seed(s), "study": s,
                                       "index": i, "space": protocol.space}) for i, p in enumerate(points)])
                _enqueue_all(_load(storage, f"default/{task}/{opt}", create=True),
                             [(default_hparams(opt), {"task": task, "optimizer": opt, "seed": default_seed(k),
                                                      "index": k, "space": "lr"})
                              for k in range(protocol.default_seeds)])


def best_trial(trials: list) -> Any:
    """The completed trial with the lowest value; ties go to the smaller learning rate."""
    done = [t for t in trials if t.state.name == "COMPLETE"]
    if not done:
        raise ValueError("a study has no completed trial")
    return min(done, key=lambda t: (t.value, t.params.get("lr", 0.0), t.number))


def prepare_eval(protocol: Protocol, url: str) -> None:
    """Enqueue the evaluation runs: each study's best point on ``eval_seeds`` fresh seeds."""
    storage = _storage(url)
    with _enqueue_lock(url):
        for task in protocol.tasks:
            for opt in protocol.optimizers:
                items = []
                for s in range(protocol.studies):
                    best = best_trial(_load(storage, f"tune/{task}/{opt}/{s}").trials)
                    items += [(dict(best.params), {"task": task, "optimizer": opt, "study": s,
                                                   "seed": eval_seed(protocol, s, k), "index": k,
                                                   "space": protocol.space})
                              for k in range(protocol.eval_seeds)]
                _enqueue_all(_load(storage, f"eval/{task}/{opt}", create=True), items)


def recover(url: str, names: list[str]) -> int:
    """Fail every RUNNING trial of ``names`` and enqueue its parameters again; returns how many.

    Only safe when no worker is alive (this machine's run restarting over its own SQLite file); with
    a server database shared by live workers on other machines, do not recover.
    """
    optuna = _optuna()
    storage = _storage(url)
    n = 0
    for name in names:
        with contextlib.suppress(KeyError):
            study = _load(storage, name)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                attrs = {k: v for k, v in t.user_attrs.items() if k not in ("run", "cpu_seconds")}
                study.enqueue_trial(dict(t.params) or t.system_attrs.get("fixed_params", {}),
                                    user_attrs={**attrs, "retry_of": t.number})
                n += 1
    return n


def run_trial(study, trial, protocol: Protocol) -> float:
    """Train the unit of work that ``trial`` holds; store its curve; return the value (minimised)."""
    from .loop import train
    from .space import build, suggest
    attrs = trial.user_attrs
    task, opt = get_task(attrs["task"]), attrs["optimizer"]
    hp = suggest(trial, opt, attrs.get("space", "lr"))
    cpu = time.process_time()
    r = train(task, opt, steps=protocol.steps, eval_every=protocol.eval_every, seed=int(attrs["seed"]),
              optimizer_factory=lambda params: build(opt, params, hp))
    cpu = time.process_time() - cpu
    final = r.final_metric if math.isfinite(r.final_metric) else None
    trial.set_user_attr("run", {"final": final, "diverged": r.diverged, "steps": r.steps, "seconds": r.seconds,
                                "evals": [[e["step"], e["seconds"], e["metric"] if math.isfinite(e["metric"]) else None]
                                          for e in r.evals]})
    trial.set_user_attr("cpu_seconds", cpu)
    value = math.inf if final is None else (-final if task.higher_is_better else final)
    study.tell(trial, value)
    return value


def work(url: str, names: list[str], protocol: Protocol, worker: int = 0,
         on_trial: Callable[[str, Any], None] | None = None) -> int:
    """One worker: pop waiting trials of the named studies (starting at a worker-dependent study)
    until none is left; returns how many it ran."""
    import torch
    optuna = _optuna()
    torch.set_num_threads(1)
    storage = _storage(url)
    order = names[worker % len(names):] + names[:worker % len(names)] if names else []
    ran = 0
    for name in order:
        study = _load(storage, name)
        while (tid := pop_trial(study, url)) is not None:
            trial = optuna.Trial(study, tid)
            if _duplicate(study, trial):  # the same unit enqueued twice (two machines preparing at once)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            try:
                run_trial(study, trial, protocol)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker popped the same trial and finished it first: its result stands
            except BaseException:
                if storage.get_trial(tid).state == optuna.trial.TrialState.RUNNING:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            ran += 1
            if on_trial is not None:
                on_trial(name, trial)
    return ran


def pop_trial(study, url: str) -> int | None:
    """The id of a waiting trial of ``study``, now RUNNING and this caller's alone; None when none waits.

    Optuna's pop reads the WAITING trials, then sets one RUNNING under ``SELECT ... FOR UPDATE``,
    which SQLite ignores: two workers could pop the same trial and both train it (seen on this
    machine: the second then failed to store its result and its worker died). On a SQLite file the
    pop is therefore serialised by the file lock the enqueueing takes; a server database locks the row."""
    with _enqueue_lock(url):
        return study._pop_waiting_trial_id()


def _unit(attrs: dict) -> tuple:
    """What a trial computes: its study index, its index in the study and its seed."""
    return attrs.get("study"), attrs.get("index"), attrs.get("seed")


def _duplicate(study, trial) -> bool:
    """Whether an earlier trial (lower number) of ``study`` computes, or computed, the same unit."""
    mine = trial.user_attrs
    for other in study.get_trials(deepcopy=False, states=None):
        if (other.number < trial.number and other.state.name in ("COMPLETE", "RUNNING")
                and _unit(other.user_attrs) == _unit(mine)):
            return True
    return False


def wait_until_idle(url: str, names: list[str], poll: float = 10.0, log: Callable[[str], None] | None = None) -> None:
    """Block until no trial of ``names`` is WAITING or RUNNING (workers on other machines finishing)."""
    optuna = _optuna()
    storage = _storage(url)
    busy = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    while True:
        left = sum(len(_load(storage, n).get_trials(deepcopy=False, states=busy)) for n in names)
        if not left:
            return
        if log is not None:
            log(f"waiting for {left} trial(s) running elsewhere")
        time.sleep(poll)


def _worker_main(url: str, names: list[str], protocol_dict: dict, worker: int) -> None:
    work(url, names, Protocol(**protocol_dict), worker)


def run_workers(url: str, names: list[str], protocol: Protocol, workers: int = 1,
                on_trial: Callable[[str, Any], None] | None = None) -> None:
    """Run ``workers`` worker processes over the named studies (in this process when 1)."""
    if workers == 1:
        work(url, names, protocol, 0, on_trial)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(url, names, _protocol_dict(protocol), w)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} protocol worker(s) failed (exit codes {failed})")


def _protocol_dict(protocol: Protocol) -> dict:
    d = asdict(protocol)
    d["tasks"], d["optimizers"] = tuple(d["tasks"]), tuple(d["optimizers"])
    return d


# ----------------------------------------------------------------------------- analysis (pure)

def first_reach(evals: list, target: float, higher_is_better: bool) -> tuple[float, float]:
    """(steps, seconds) of the first validation ``[step, seconds, metric]`` meeting the target; inf, inf if none."""
    for step, seconds, metric in evals:
        if metric is not None and math.isfinite(metric) and (metric >= target if higher_is_better else metric <= target):
            return float(step), float(seconds)
    return math.inf, math.inf


def median_inf(values: Iterable[float]) -> float:
    """The median, with misses (inf) sorted last: more than half missed (half, for an even count) -> inf."""
    v = sorted(values)
    if not v:
        raise ValueError("median of no values")
    n = len(v)
    if n % 2:
        return v[n // 2]
    a, b = v[n // 2 - 1], v[n // 2]
    return math.inf if math.isinf(b) else (a + b) / 2


def set_target(finals_by_optimizer: dict[str, list[float | None]], higher_is_better: bool,
               quantile: float = 0.25) -> tuple[float, str]:
    """(target, baseline): the baseline has the best median final metric over its runs (a missing
    or non-finite final counts as worst); the target is the best value that at least a share
    ``1 - quantile`` of its runs reach (its ``quantile``-worst final metric)."""
    def worst() -> float:
        return -math.inf if higher_is_better else math.inf

    def clean(values):
        return [v if v is not None and math.isfinite(v) else worst() for v in values]

    def median(values):
        return float(np.median(clean(values)))
    scored = {o: median(v) for o, v in finals_by_optimizer.items() if v}
    if not scored:
        raise ValueError("no runs to set a target from")
    baseline = max(scored, key=scored.get) if higher_is_better else min(scored, key=scored.get)
    # the k-th best final metric, k = ceil((1 - quantile) n): at least that share of its runs reach it
    finals = sorted(clean(finals_by_optimizer[baseline]), reverse=higher_is_better)
    target = float(finals[max(0, math.ceil((1 - quantile) * len(finals) - 1e-9) - 1)])
    if not math.isfinite(target):
        raise ValueError(f"the baseline {baseline!r} diverged too often to set a target")
    return target, baseline


def profile(times: dict[str, dict[str, float]], taus: Iterable[float]) -> dict[str, list[float]]:
    """Performance profile: ``times[task][optimizer]`` (inf = missed) -> per optimizer the fraction of
    tasks with ``t <= tau * best`` for each tau. A task nobody solved counts as unsolved for all."""
    taus = list(taus)
    optimizers = sorted({o for row in times.values() for o in row})
    out = {o: [0.0] * len(taus) for o in optimizers}
    for row in times.values():
        best = min(row.values())
        for o in optimizers:
            t = row.get(o, math.inf)
            if math.isfinite(best) and math.isfinite(t):
                for i, tau in enumerate(taus):
                    out[o][i] += (t <= tau * best) / len(times)
    return out


def ratios(times: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``t / best`` per task and optimizer (inf for a miss, and for everyone on a task nobody solved)."""
    out: dict[str, dict[str, float]] = {}
    for task, row in times.items():
        best = min(row.values())
        solved = math.isfinite(best)
        out[task] = {o: (math.inf if not (solved and math.isfinite(t)) else t / best if best > 0 else 1.0)
                     for o, t in row.items()}
    return out


def profile_score(times: dict[str, dict[str, float]], tau_max: float = 4.0) -> dict[str, float]:
    """Area under the profile over tau in [1, tau_max], divided by tau_max - 1 (1 = fastest everywhere)."""
    optimizers = sorted({o for row in times.values() for o in row})
    r = ratios(times)
    return {o: sum(max(0.0, tau_max - max(1.0, r[t].get(o, math.inf))) / (tau_max - 1)
                   for t in r) / len(r) for o in optimizers}


def bootstrap_ratio(a: list[float], b: list[float], n: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """Median(a) / median(b) with a percentile-bootstrap interval (resampling each group); inf = miss.

    Resamples where both medians are inf are undefined; the interval is then taken over the
    others, and is (nan, nan) when more than 5% are undefined (report: inconclusive)."""
    rng = np.random.default_rng(seed)
    a_, b_ = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)

    def ratio(x, y):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.median(x, axis=-1) / np.median(y, axis=-1)
    point = float(ratio(a_, b_))
    boots = ratio(a_[rng.integers(0, len(a_), (n, len(a_)))], b_[rng.integers(0, len(b_), (n, len(b_)))])
    if np.isnan(boots).mean() > 0.05:
        return point, math.nan, math.nan
    lo, hi = np.nanpercentile(boots, [50 * (1 - level), 100 - 50 * (1 - level)], method="inverted_cdf")
    return point, float(lo), float(hi)


def verdict(lo: float, hi: float) -> str:
    """'holds' when the whole interval of (claimed faster / other) is below 1, 'does not hold' when
    above 1, else 'inconclusive'."""
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    return "holds" if hi < 1 else "does not hold" if lo > 1 else "inconclusive"


# ----------------------------------------------------------------------------- collecting results

def collect(protocol: Protocol, url: str) -> dict[str, Any]:
    """Every completed trial's record, grouped: ``raw[task][opt]`` -> {tune: [...], eval: [...], default: [...]}."""
    optuna = _optuna()
    storage = _storage(url)
    raw: dict[str, Any] = {}
    starts, ends, seen = [], [], set()
    for task in protocol.tasks:
        for opt in protocol.optimizers:
            entry = raw.setdefault(task, {}).setdefault(opt, {"tune": [], "eval": [], "default": [], "space": {},
                                                                      "bounds": {}})
            names = [("tune", n) for n in study_names(protocol, "tune") if n.startswith(f"tune/{task}/{opt}/")]
            names += [("eval", f"eval/{task}/{opt}"), ("default", f"default/{task}/{opt}")]
            for phase, name in names:
                for t in _load(storage, name).get_trials(deepcopy=False):
                    if t.state == optuna.trial.TrialState.COMPLETE and phase == "tune":
                        entry["space"] = {k: _describe(d) for k, d in t.distributions.items()}
                        entry["bounds"] = {k: [d.low, d.high, bool(getattr(d, "log", False))]
                                           for k, d in t.distributions.items() if hasattr(d, "low")}
                    if t.state == optuna.trial.TrialState.COMPLETE and (name, _unit(t.user_attrs)) in seen:
                        continue  # a duplicate unit (defensive: workers skip them)
                    if t.state == optuna.trial.TrialState.COMPLETE:
                        seen.add((name, _unit(t.user_attrs)))
                        starts.append(t.datetime_start)
                        ends.append(t.datetime_complete)
                        entry[phase].append({"number": t.number, "params": dict(t.params), "value": t.value,
                                             **{k: v for k, v in t.user_attrs.items()}})
    # the span of the work itself, from the first trial's start to the last one's end (a re-run that
    # only re-renders the report does not change it)
    raw["__span__"] = (max(ends) - min(starts)).total_seconds() if starts else 0.0
    raw["__started__"] = min(starts).strftime("%Y-%m-%d %H:%M UTC") if starts else None
    return raw


def search_edge(params: dict, bounds: dict, cells: int) -> list[str]:
    """Where a study's best point lies on the edge of its search range: ``["lr high", ...]``.

    A value is on the edge when it falls in the outermost ``1 / cells`` of its range (log scale for a
    log range), the cell beyond which the study sampled nothing (with ``cells`` = trials, a scrambled
    Sobol sequence puts one point in each): a better value may lie outside the range, so the range
    is too narrow for that (task, optimizer)."""
    out = []
    for name, (low, high, log) in sorted(bounds.items()):
        x = params.get(name)
        if x is None or not high > low:
            continue
        u = (math.log(x / low) / math.log(high / low)) if log else (x - low) / (high - low)
        if u < 1 / cells:
            out.append(f"{name} low")
        elif u > 1 - 1 / cells:
            out.append(f"{name} high")
    return out


def _describe(distribution) -> str:
    """A searched distribution as text, as it was stored with the trials (``lr: 0.0001..10, log``)."""
    low, high = getattr(distribution, "low", None), getattr(distribution, "high", None)
    if low is None:
        return "one of " + ", ".join(map(str, getattr(distribution, "choices", ())))
    return f"{low:g}..{high:g}" + (", log" if getattr(distribution, "log", False) else "")


def analyse(protocol: Protocol, raw: dict) -> dict[str, Any]:
    """Targets, per-study and per-pair times (seconds and steps), profiles, scores and defaults."""
    out: dict[str, Any] = {"tasks": {}, "times": {"seconds": {}, "steps": {}}}
    for task_name in protocol.tasks:
        task = get_task(task_name)
        rows = raw[task_name]
        target, baseline = set_target({o: [e["run"]["final"] for e in rows[o]["eval"]] for o in protocol.optimizers},
                                      task.higher_is_better, protocol.target_quantile)
        per_opt = {}
        for opt in protocol.optimizers:
            evals = rows[opt]["eval"]
            reach = [first_reach(e["run"]["evals"], target, task.higher_is_better) for e in evals]
            studies = []
            for s in range(protocol.studies):
                mine = [(r, e) for r, e in zip(reach, evals) if e["study"] == s]
                best_lr = mine[0][1]["params"].get("lr") if mine else None
                edge = search_edge(mine[0][1]["params"], rows[opt].get("bounds", {}), protocol.trials) if mine else []
                studies.append({"study": s, "lr": best_lr, "edge": edge, "steps": median_inf(r[0] for r, _ in mine) if mine else math.inf,
                                "seconds": median_inf(r[1] for r, _ in mine) if mine else math.inf,
                                "reached": sum(math.isfinite(r[0]) for r, _ in mine), "seeds": len(mine)})
            finals = [e["run"]["final"] for e in evals]
            defaults = rows[opt]["default"]
            d_reach = [first_reach(e["run"]["evals"], target, task.higher_is_better) for e in defaults]
            per_opt[opt] = {
                "studies": studies,
                "seconds": median_inf(s["seconds"] for s in studies),
                "steps": median_inf(s["steps"] for s in studies),
                "seconds_range": [min(s["seconds"] for s in studies), max(s["seconds"] for s in studies)],
                "steps_range": [min(s["steps"] for s in studies), max(s["steps"] for s in studies)],
                "run_seconds": [r[1] for r in reach],   # every evaluation run (for intervals)
                "run_steps": [r[0] for r in reach],
                "final_median": _nanmedian(finals), "final_range": _nanrange(finals),
                "diverged": sum(e["run"]["diverged"] for e in evals) + sum(e["run"]["diverged"] for e in rows[opt]["tune"]),
                "default": {"hp": defaults[0]["params"] if defaults else {},
                            "reached": sum(math.isfinite(r[0]) for r in d_reach), "seeds": len(defaults),
                            "steps": median_inf(r[0] for r in d_reach) if d_reach else math.inf,
                            "seconds": median_inf(r[1] for r in d_reach) if d_reach else math.inf,
                            "final_median": _nanmedian([e["run"]["final"] for e in defaults]),
                            "final_range": _nanrange([e["run"]["final"] for e in defaults])},
                "tuning": [{"lr": e["params"].get("lr"), "final": e["run"]["final"], "seed": e["seed"]}
                           for e in rows[opt]["tune"]],
                "cpu_seconds": sum(e.get("cpu_seconds", 0.0) for ph in ("tune", "eval", "default") for e in rows[opt][ph]),
                "runs": sum(len(rows[opt][ph]) for ph in ("tune", "eval", "default")),
                "space": rows[opt].get("space", {}),
            }
            out["times"]["seconds"].setdefault(task_name, {})[opt] = per_opt[opt]["seconds"]
            out["times"]["steps"].setdefault(task_name, {})[opt] = per_opt[opt]["steps"]
        out["tasks"][task_name] = {"target": target, "baseline": baseline, "target_text":
                                   f"{task.metric_name} {'>=' if task.higher_is_better else '<='} {target:.4g}",
                                   "held_out": task.held_out, "non_stationary": task.shift is not None,
                                   "optimizers": per_opt}
    taus = np.linspace(1.0, protocol.tau_max, 61).tolist()
    out["taus"] = taus
    for kind in ("seconds", "steps"):
        out[f"profile_{kind}"] = profile(out["times"][kind], taus)
        out[f"score_{kind}"] = profile_score(out["times"][kind], protocol.tau_max)
    out["budget"] = {"runs": sum(p["runs"] for t in out["tasks"].values() for p in t["optimizers"].values()),
                     "cpu_seconds": sum(p["cpu_seconds"] for t in out["tasks"].values() for p in t["optimizers"].values())}
    out["budget"]["span_seconds"] = raw.get("__span__", math.nan)
    out["budget"]["started"] = raw.get("__started__")
    out["budget"]["retried"] = sum("retry_of" in e for t in protocol.tasks for o in protocol.optimizers
                                   for ph in ("tune", "eval", "default") for e in raw[t][o][ph])
    out["verdicts"] = verdicts(protocol, out)
    return out


def _nanmedian(values) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return statistics.median(v) if v else math.nan


def _nanrange(values) -> list[float]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return [min(v), max(v)] if v else [math.nan, math.nan]


def verdicts(protocol: Protocol, result: dict, kind: str = "steps") -> list[dict[str, Any]]:
    """The seed's practical advice, measured (time to target in ``kind``: steps by default, as the
    seconds of a shared machine depend on its load when each run ran; 95% intervals)."""
    tasks = result["tasks"]
    out = []
    opts = protocol.optimizers
    if "adam" in opts:
        solved = {o: sum(tasks[t]["optimizers"][o]["default"]["reached"] * 2 > tasks[t]["optimizers"][o]["default"]["seeds"]
                         for t in tasks) for o in opts}
        best_other = max((solved[o] for o in opts if o != "adam"), default=-1)
        status = ("holds" if solved["adam"] > best_other and solved["adam"] * 2 >= len(tasks) else
                  "does not hold" if solved["adam"] < best_other else "inconclusive")
        out.append({"claim": "Adam is a good default",
                    "test": "tasks on which the optimizer at its library defaults reaches the target in most of "
                            f"its {protocol.default_seeds} seeds; holds if Adam's count is the highest and at least "
                            "half the tasks",
                    "numbers": ", ".join(f"{o} {solved[o]}/{len(tasks)}" for o in opts), "verdict": status})
    if "adam" in opts and "rmsprop" in opts:
        parts, statuses = [], []
        for t in tasks:
            point, lo, hi = bootstrap_ratio(tasks[t]["optimizers"]["rmsprop"][f"run_{kind}"],
                                            tasks[t]["optimizers"]["adam"][f"run_{kind}"])
            statuses.append(verdict(lo, hi))
            parts.append(f"{t} {_fmt_ratio(point)} [{_fmt_ratio(lo)}, {_fmt_ratio(hi)}]")
        status = ("holds" if "holds" in statuses else
                  "does not hold" if all(s == "does not hold" for s in statuses) else "inconclusive")
        out.append({"claim": "RMSProp sometimes beats Adam",
                    "test": f"per task, median {kind} to target of tuned RMSProp / tuned Adam over all evaluation "
                            "runs, 95% bootstrap interval; holds if some task's interval lies below 1",
                    "numbers": "; ".join(parts), "verdict": status})
    sparse = [t for t in tasks if "sparse" in t]
    if "adagrad" in opts and sparse and len(opts) > 1:
        t = sparse[0]
        row = tasks[t]["optimizers"]
        others = [o for o in opts if o != "adagrad"]
        rival = min(others, key=lambda o: (row[o][kind], row[o]["seconds"], row[o]["steps"]))
        point, lo, hi = bootstrap_ratio(row["adagrad"][f"run_{kind}"], row[rival][f"run_{kind}"])
        out.append({"claim": "AdaGrad for sparse features",
                    "test": f"on {t}, median {kind} to target of tuned AdaGrad / the fastest other optimizer "
                            f"({rival}), 95% bootstrap interval; holds if below 1",
                    "numbers": f"{_fmt_ratio(point)} [{_fmt_ratio(lo)}, {_fmt_ratio(hi)}]",
                    "verdict": verdict(lo, hi)})
    return out


def _fmt_ratio(x: float) -> str:
    return "nan" if math.isnan(x) else "inf" if math.isinf(x) else f"{x:.2f}"


# ----------------------------------------------------------------------------- the whole run

def environment() -> dict[str, Any]:
    import torch
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads_per_worker": 1,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def run_protocol(protocol: Protocol, url: str, workers: int = 1, recover_stale: bool = True,
                 on_trial: Callable[[str, Any], None] | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Tune, evaluate and analyse; resumable (a finished trial is never run again).

    Many machines may run this at once on one server database: each prepares the studies (a unit
    enqueued twice is run once, see :func:`_duplicate`), works through the waiting trials, waits
    for the other machines' running trials before the evaluation is prepared, and writes the same
    report. Pass ``recover_stale=False`` there (a RUNNING trial may be alive on another machine)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise ValueError(f"workers must be an integer in [1, 256], got {workers!r}")
    start = time.time()
    env = environment()
    prepare_tuning(protocol, url)
    first = study_names(protocol, "tune") + study_names(protocol, "default")
    recovered = recover(url, first) if recover_stale else 0
    if log is not None:
        log(f"studies ready ({recovered} interrupted trial(s) enqueued again); tuning")
    run_workers(url, first, protocol, workers, on_trial)
    wait_until_idle(url, first, log=log)
    prepare_eval(protocol, url)
    second = study_names(protocol, "eval")
    if recover_stale:
        recovered += recover(url, second)
    if log is not None:
        log("evaluation runs ready; evaluating")
    run_workers(url, second, protocol, workers, on_trial)
    wait_until_idle(url, second, log=log)
    result = analyse(protocol, collect(protocol, url))
    env["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result.update({"protocol": _protocol_dict(protocol), "environment": env, "workers": workers,
                   "wall_seconds": time.time() - start, "recovered": recovered, "storage": url})
    return result


def jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return jsonable(x.item())
    return x


def dumps(result: dict) -> str:
    return json.dumps(jsonable(result), indent=1)

