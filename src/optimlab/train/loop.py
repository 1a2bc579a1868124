"""The training loop shared by ``optimlab train``, ``bench`` and the tests.

One run: build the task's model from the run's seed, draw batches by the gradient-descent mode,
step the optimizer (and the LR schedule), evaluate the validation metric every ``eval_every``
steps, and record when the target is first met. Time is training time only: evaluation and
diagnostics are excluded from ``seconds`` and ``seconds_to_target`` (as in MLCommons AlgoPerf,
which does not charge evaluation to the submission).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .. import catalogue
from .modes import Mode, batches
from ..schedules import build as make_schedule, is_plateau
from .tasks import Task, get_task

def make_optimizer(name: str, params, lr: float, state_dtype: Any = None) -> torch.optim.Optimizer:
    """The catalogue's optimizer ``name`` (:mod:`optimlab.catalogue`) with learning rate ``lr``
    (and ``state_dtype``, see :mod:`optimlab.faults`, when given)."""
    entry = catalogue.get(name)
    check_lr(lr)
    return entry.make(params, lr=lr, **({} if state_dtype is None else {"state_dtype": state_dtype}))


def check_lr(lr: float, name: str = "lr") -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 < lr <= 100:
        raise ValueError(f"{name} must be a number in (0, 100], got {lr!r}")


def default_mode(task: Task) -> Mode:
    """The task's tuned default: mini-batches of ``default_batch_size``, or batch GD when that is None."""
    return Mode("batch") if task.default_batch_size is None else Mode("minibatch", task.default_batch_size)


def build_model(task: Task, seed: int) -> nn.Module:
    """The task's model with initial weights drawn from ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return task.make_model()


@torch.no_grad()
def evaluate(task: Task, model: nn.Module) -> tuple[float, float]:
    """(validation metric, validation loss) on the whole validation set."""
    data = task.data()
    was_training = model.training
    model.eval()
    out = model(data.x_val)
    model.train(was_training)
    return task.metric(out, data.y_val), task.loss(out, data.y_val).item()


@dataclass
class RunResult:
    task: str
    optimizer: str
    lr: float
    mode: str
    schedule: str
    seed: int
    steps: int                      # steps actually taken
    seconds: float                  # training time (evaluation excluded)
    train_loss: list[float]         # per step
    evals: list[dict[str, float]]   # per evaluation: step, seconds, metric, val_loss, lr
    steps_to_target: int | None
    seconds_to_target: float | None
    final_metric: float
    diverged: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, curves: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not curves:
            d.pop("train_loss")
            d.pop("evals")
        return d


def train(task: Task | str, optimizer: str | None = None, lr: float | None = None, mode: Mode | None = None,
          steps: int | None = None, schedule: str = "none", seed: int = 0, eval_every: int | None = None,
          stop_at_target: bool = False, diagnostics=None, model: nn.Module | None = None,
          callback: Callable[[int, int, float, dict | None], None] | None = None,
          optimizer_factory: Callable[[Any], torch.optim.Optimizer] | None = None,
          state_dtype: Any = None) -> RunResult:
    """Train ``task`` once and return its curves and its steps / seconds to the target.

    Defaults (optimizer, lr, mini-batch size, steps, eval_every) are the task's. The run stops early
    when the loss becomes non-finite (``diverged``) or, with ``stop_at_target``, when the target is met.
    ``callback(step, steps, loss, last_eval)`` is called after every step (for a progress bar).
    ``model``, if given, is trained in place instead of a fresh one built from ``seed``.
    ``optimizer_factory(params)``, if given, builds the optimizer instead of ``optimizer`` and ``lr``
    (``optimlab tune`` and the benchmark protocol pass every tuned hyperparameter this way); the
    result's ``lr`` is then the built optimizer's first-group lr (``optimizer`` stays the label).
    """
    task = get_task(task) if isinstance(task, str) else task
    optimizer = optimizer or task.default_optimizer
    lr = task.default_lr if lr is None else lr
    mode = mode or default_mode(task)
    steps = task.budget_steps if steps is None else steps
    eval_every = task.eval_every if eval_every is None else eval_every
    for name, value in (("steps", steps), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    data = task.data()
    model = build_model(task, seed) if model is None else model
    if optimizer_factory is None:
        opt = make_optimizer(optimizer, model.parameters(), lr, state_dtype)
    else:
        opt = optimizer_factory(model.parameters())
        lr = opt.param_groups[0]["lr"]
    sched = make_schedule(schedule, opt, steps, task.higher_is_better)
    stream = batches(mode, data.n_train, torch.Generator().manual_seed(10_000 + seed))

    losses: list[float] = []
    evals: list[dict[str, float]] = []
    steps_to_target = seconds_to_target = None
    diverged = False
    elapsed = 0.0
    step = 0
    model.train()
    while step < steps:
        idx = next(stream)
        x_train, y_train = task.train_tensors(step, steps)
        if diagnostics is not None:
            diagnostics.before_step(model, step + 1)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = task.loss(model(x_train[idx]), y_train[idx])
        loss.backward()
        if diagnostics is not None:  # gradients are read before the step changes anything
            elapsed += time.perf_counter() - start
            diagnostics.after_backward(model, step + 1)
            start = time.perf_counter()
        opt.step()
        if sched is not None and not is_plateau(sched):
            sched.step()
        value = loss.item()
        elapsed += time.perf_counter() - start
        step += 1
        losses.append(value)
        if diagnostics is not None:
            diagnostics.after_step(model, step)
        if not math.isfinite(value):
            diverged = True
        last = None
        if step % eval_every == 0 or step == steps or diverged:
            metric, val_loss = evaluate(task, model) if not diverged else (math.nan, math.nan)
            last = {"step": step, "seconds": elapsed, "metric": metric, "val_loss": val_loss,
                    "lr": opt.param_groups[0]["lr"]}
            evals.append(last)
            if steps_to_target is None and task.reached(metric):
                steps_to_target, seconds_to_target = step, elapsed
            if sched is not None and is_plateau(sched) and math.isfinite(metric):
                sched.step(metric)
        if callback is not None:
            callback(step, steps, value, last)
        if diverged or (stop_at_target and steps_to_target is not None):
            break
    return RunResult(task.name, optimizer, float(lr), str(mode), schedule, seed, step, elapsed, losses, evals,
                     steps_to_target, seconds_to_target, evals[-1]["metric"], diverged)
