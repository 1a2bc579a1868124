"""``optimlab tune``: hyperparameter search with Optuna, one study shared by any number of workers.

The study lives in a database: SQLite by default (a file, nothing to run), or any database URL
Optuna accepts (``postgresql://...``, ``mysql+pymysql://...``) for many workers on many
machines. Each worker runs ``optimlab tune --storage URL --study NAME ...``; the storage hands
every trial to exactly one worker (tested with two workers on one SQLite file), so starting more
workers only makes the study finish sooner.

The objective is pluggable: :func:`objective` takes an Optuna trial, asks :func:`suggest` for the
algorithm's hyperparameters, and trains a *task* -- any callable
``task(make_optimizer, *, trial, report) -> float`` returning the value to minimize. The default
task is the small built-in MLP of :mod:`optimlab.quicktask`; ``--task module:function`` picks
another, and ``--task train:NAME`` any training task of ``optimlab.train`` (its final validation
metric, through the loop's optimizer factory hook).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import sys
import time
import warnings
from functools import partial
from typing import Any, Callable, Iterable, Iterator


DEFAULT_STORAGE = "sqlite:///optimlab-tune.db"
STORAGE_ENV = "OPTIMLAB_STORAGE"  # the storage URL, kept out of the command line (and so out of `ps`)
Task = Callable[..., float]


def suggest(trial: Any, algorithm: str) -> dict[str, Any]:
    """Constructor arguments of the catalogue entry ``algorithm``, drawn from the trial over its
    declared search space (``catalogue.Entry.tune``)."""
    from . import catalogue
    return catalogue.suggest(trial, algorithm)


def quicktask(make_optimizer: Callable[[Iterable[Any]], Any], *,
              trial: Any = None, report: Callable[[int, float], None] | None = None,
              steps: int = 60, seed: int = 0) -> float:
    """The default task: the built-in MLP (:mod:`optimlab.quicktask`); returns its validation loss."""
    from . import quicktask as task
    return task.train(make_optimizer, steps=steps, seed=seed, report=report)[1]


def objective(trial: Any, algorithm: str = "adam", task: Task = quicktask) -> float:
    """What Optuna minimizes: ``task`` trained with the hyperparameters ``suggest`` draws.

    A run that diverges (non-finite loss) is reported as pruned, not as a failure of the worker.
    """
    import optuna

    from . import catalogue

    hp = suggest(trial, algorithm)
    cls = catalogue.get(algorithm).cls

    def report(step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise optuna.TrialPruned(f"loss became {loss} at step {step}")
        if step % 10 == 0:
            trial.report(loss, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (loss {loss:.4g})")

    value = float(task(lambda params: cls(params, **hp), trial=trial, report=report))
    if not math.isfinite(value):
        raise optuna.TrialPruned(f"final value {value}")
    return value


def storage_url(flag: str | None = None, file: str | None = None) -> str:
    """The study's database URL: ``--storage`` (visible to every local user in ``ps``), else the
    first line of ``--storage-file``, else ``$OPTIMLAB_STORAGE``, else the local SQLite file."""
    if flag is not None and file is not None:
        raise ValueError("give --storage or --storage-file, not both")
    if file is not None:
        with open(file, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            raise ValueError(f"--storage-file {file}: holds no database URL")
        return lines[0]
    if flag is not None:
        if _has_password(flag):
            print(f"optimlab tune: warning: the password in --storage is visible to every local user (ps); "
                  f"put the URL in ${STORAGE_ENV} or a --storage-file instead", file=sys.stderr)
        return flag
    return os.environ.get(STORAGE_ENV, "").strip() or DEFAULT_STORAGE


def _has_password(url: str) -> bool:
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        return bool(sqlalchemy.engine.make_url(url).password)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return False


def shown(url: str) -> str:
    """``url`` as it may appear in a message: the password masked, or nothing when it does not parse."""
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "(unparseable URL)"


def storage_for(url: str, *, heartbeat: int = 0) -> Any:
    """An Optuna storage for ``url``; SQLite waits for its lock (many local workers) instead of failing.

    Raises ValueError (the password masked) when ``url`` is not a database URL, names a database
    driver that is not installed, or the database cannot be opened."""
    import optuna
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        dialect = sqlalchemy.engine.make_url(url).get_dialect()
        if hasattr(dialect, "import_dbapi"):  # SQLAlchemy 2: the driver module is imported here
            dialect.import_dbapi()
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise ValueError("storage must be a database URL such as sqlite:///study.db or "
                         f"postgresql://user@host/db, got {shown(url)}") from exc
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as exc:
        raise ValueError(f"storage {shown(url)}: database driver not available ({exc})") from exc
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    if heartbeat < 0:
        raise ValueError(f"heartbeat must be >= 0 seconds, got {heartbeat}")
    if heartbeat:  # a trial whose worker stops beating is failed, and re-queued with its params
        kwargs["heartbeat_interval"] = max(1, round(heartbeat))
        kwargs["grace_period"] = 4 * kwargs["heartbeat_interval"]
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
            kwargs["heartbeat_stale_trial_callback"] = retry
        else:
            kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=2)
    # Workers started together on a new database race to create its tables (Optuna does not lock
    # the schema creation). For SQLite, a lock file next to the database serializes it; for a
    # server database, the loser of the race retries against the schema the winner made.
    with _schema_lock(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat: stable in use
        for attempt in range(6):
            try:
                return optuna.storages.RDBStorage(url, **kwargs)
            except sqlalchemy.exc.SQLAlchemyError as exc:
                if attempt == 5:
                    raise ValueError(f"storage {shown(url)}: cannot open the database "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
                time.sleep(0.2 * 2 ** attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """An exclusive lock on ``DB.lock`` for a SQLite file database (POSIX); nothing otherwise."""
    import sqlalchemy.engine

    database = sqlalchemy.engine.make_url(url).database if url.startswith("sqlite") else None
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rely on the retries
        fcntl = None
    if not database or database == ":memory:" or fcntl is None:
        yield
        return
    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def training_task(name: str) -> Task:
    """A training task of :mod:`optimlab.train` (``--task train:NAME``) as a tuning task: one run of
    the task's step budget (seed 0) with the trial's optimizer; returns the final validation metric,
    negated when higher is better (Optuna minimizes). The training loss is reported every step."""
    from .train.loop import train
    from .train.tasks import get_task

    task = get_task(name)

    def run(make_optimizer, *, trial: Any = None, report: Callable[[int, float], None] | None = None) -> float:
        def callback(step: int, steps: int, loss: float, last: Any) -> None:
            if report is not None:
                report(step, loss)
        r = train(task, seed=0, optimizer_factory=make_optimizer, callback=callback)
        return -r.final_metric if task.higher_is_better else r.final_metric
    return run


def load_task(spec: str) -> Task:
    """``"train:NAME"`` -> that training task (:func:`training_task`); ``"module:function"`` -> the
    function (the ``--task`` option)."""
    if spec.startswith("train:"):
        return training_task(spec.removeprefix("train:"))
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"task must look like 'module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"task {spec!r} cannot be loaded: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"task {spec!r} is not callable")
    return fn


def run(algorithm: str = "adam", *, n_trials: int = 20, storage: str = DEFAULT_STORAGE,
        study_name: str | None = None, task: Task = quicktask, seed: int | None = None,
        total_trials: int | None = None, heartbeat: int = 0,
        on_trial: Callable[[Any], None] | None = None) -> Any:
    """Run ``n_trials`` trials in this worker on the shared study; return the study."""
    import optuna

    from . import catalogue

    algorithm = catalogue.get(algorithm).name
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if total_trials is not None and total_trials < 1:
        raise ValueError(f"total_trials must be >= 1, got {total_trials}")
    study_name = study_name or f"optimlab-{algorithm}"
    study = optuna.create_study(study_name=study_name, storage=storage_for(storage, heartbeat=heartbeat),
                                direction="minimize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    known = study.user_attrs.get("algorithm")
    if known is None:
        study.set_user_attr("algorithm", algorithm)
    elif known != algorithm:
        raise ValueError(f"algorithm {algorithm!r} does not match study {study_name!r}, which tunes {known!r}")
    callbacks = []
    if total_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(total_trials, states=None))
    if on_trial is not None:
        callbacks.append(lambda study, trial: on_trial(trial))
    study.optimize(partial(objective, algorithm=algorithm, task=task), n_trials=n_trials, callbacks=callbacks,
                   catch=())
    return study


def register(sub) -> None:
    from .cli import plain

    p = sub.add_parser("tune", help="tune an optimizer's hyperparameters with Optuna (many workers, one study)",
                       description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithm", "--optimizer", dest="algorithm", default="adam", metavar="NAME",
                   help="optimizer to tune, case-insensitive (`optimlab optimizers` lists them; default adam); "
                        "its search space is the catalogue's")
    p.add_argument("--trials", type=int, default=20, help="trials this worker runs (default 20)")
    p.add_argument("--total-trials", type=int, default=None,
                   help="stop every worker once the study holds this many trials")
    p.add_argument("--storage", default=None,
                   help=f"database URL of the study (default ${STORAGE_ENV}, else {DEFAULT_STORAGE}); a "
                        "password here shows in ps: prefer the environment variable or --storage-file")
    p.add_argument("--storage-file", default=None, metavar="PATH",
                   help="read the database URL from the first line of this file (keep it mode 600)")
    p.add_argument("--study", default=None, help="study name (default optimlab-ALGORITHM)")
    p.add_argument("--task", default=None,
                   help="train:NAME for a training task (digits-mlp, ...), or module:function of a task "
                        "(default: built-in MLP)")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (give each worker its own)")
    p.add_argument("--heartbeat", type=int, default=0,
                   help="seconds between worker heartbeats; a trial of a worker silent for 4 beats is "
                        "failed and retried with the same parameters (0: off)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def on_trial(trial: Any) -> None:
        print(json.dumps({"trial": trial.number, "state": trial.state.name, "value": trial.value,
                          "params": trial.params}), flush=True)

    for flag, value in (("--trials", args.trials), ("--total-trials", args.total_trials)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.heartbeat < 0:
        raise ValueError(f"--heartbeat must be >= 0 seconds, got {args.heartbeat}")
    task = load_task(args.task) if args.task else quicktask
    storage = storage_url(args.storage, args.storage_file)
    study = run(args.algorithm, n_trials=args.trials, storage=storage, study_name=args.study, task=task,
                seed=args.seed, total_trials=args.total_trials, heartbeat=args.heartbeat, on_trial=on_trial)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if done:
        best = study.best_trial
        print(json.dumps({"best_trial": best.number, "best_value": best.value, "best_params": best.params}),
              flush=True)
    else:
        print(json.dumps({"best_trial": None}), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from .cli import main
    sys.exit(main(["tune", *sys.argv[1:]]))
