"""Smith's learning-rate range test (L. N. Smith, "Cyclical Learning Rates for Training Neural
Networks", WACV 2017, section 3.3), in its exponential form.

Train for at most ``num_steps`` steps while the learning rate grows geometrically,

    lr_i = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1)),

record the loss of each step, smooth it with an EWMA with bias correction,

    s_i = beta * s_{i-1} + (1 - beta) * loss_i,   smoothed_i = s_i / (1 - beta ** i)

(default ``beta = 0.9``: an EWMA lags by ``beta / (1 - beta)`` steps, here 9 steps = 0.6 decade
of LR with the default 100-step ramp over 7 decades; fastai's 0.98 would lag 49 steps = 3.5
decades at that ramp speed and shift both suggestions upwards)

(:class:`optimlab.EWMA`), and stop once the smoothed loss exceeds ``diverge`` times its minimum
or a loss is not finite. Two rules read a learning rate off the curve:

* ``"steepest"``: the LR where the smoothed loss falls fastest, ``argmin d smoothed / d log(lr)``
  (over the points before the minimum of the smoothed loss);
* ``"min/10"``: one tenth of the LR at the minimum of the smoothed loss (past the minimum the loss
  is already climbing, so a tenth of it is still in the fast-descent region).

The model's parameters and buffers and the optimizer's ``state_dict`` (its state and every group's
learning rate) are restored afterwards, even if the test raises.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..ewma import EWMA

RULES = ("steepest", "min/10")


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: dict[str, float] = field(default_factory=dict)
    rule: str = "min/10"
    beta: float = 0.9
    stopped_early: bool = False  # stopped on divergence before num_steps

    @property
    def min_at_end(self) -> bool:
        """Whether the smoothed loss was lowest in the last 5% of the recorded ramp (it never turned up):
        then ``min/10`` only reflects where the ramp stopped, not where the loss starts to diverge."""
        lowest = int(np.nanargmin(self.smoothed))
        return lowest >= len(self.smoothed) - max(1, len(self.smoothed) // 20)

    @property
    def suggestion(self) -> float:
        """The suggested learning rate by :attr:`rule`."""
        return self.suggestions[self.rule]


def _check(name: str, value, low: float, high: float = math.inf, integer: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not (low <= value <= high) or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} in [{low:g}, {high:g}], got {value!r}")


def suggest(lrs: list[float], smoothed: list[float]) -> dict[str, float]:
    """Both rules' suggestions from a recorded range test (see the module docstring)."""
    if len(lrs) < 3:
        raise ValueError(f"the range test needs at least 3 recorded steps to suggest a learning rate, got {len(lrs)}")
    loss = np.asarray(smoothed, dtype=np.float64)
    log_lr = np.log(np.asarray(lrs, dtype=np.float64))
    lowest = int(np.nanargmin(loss))
    end = max(lowest, 2)
    slope = np.gradient(loss[:end + 1], log_lr[:end + 1])
    return {"steepest": float(lrs[int(np.argmin(slope))]), "min/10": float(lrs[lowest] / 10)}


def lr_range_test(model: nn.Module, optimizer: torch.optim.Optimizer, closure: Callable[[], Tensor],
                  start_lr: float = 1e-6, end_lr: float = 10.0, num_steps: int = 100, beta: float = 0.9,
                  diverge: float = 4.0, rule: str = "min/10") -> LRFinderResult:
    """Run the range test; ``closure()`` computes the loss of the next batch (forward pass only).

    Every group's learning rate is set to ``lr_i`` at step ``i``; gradients are zeroed, the loss
    back-propagated and ``optimizer.step()`` taken. Model and optimizer are restored at the end.
    """
    _check("start_lr", start_lr, 1e-12, 1e3)
    _check("end_lr", end_lr, 1e-12, 1e4)
    if end_lr <= start_lr:
        raise ValueError(f"end_lr must be greater than start_lr ({start_lr:g}), got {end_lr!r}")
    _check("num_steps", num_steps, 3, 100_000, integer=True)
    _check("beta", beta, 0.0, 0.999)
    _check("diverge", diverge, 1.0, 1e6)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(map(repr, RULES))}, got {rule!r}")

    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    avg = EWMA(beta, bias_correction=True)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    stopped = False
    ratio = end_lr / start_lr
    try:
        model.train()
        for i in range(num_steps):
            lr = start_lr * ratio ** (i / (num_steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = closure()
            value = float(loss.item())
            if not math.isfinite(value):
                stopped = True
                break
            loss.backward()
            optimizer.step()
            lrs.append(lr)
            losses.append(value)
            smoothed.append(float(avg.update(value)))
            if smoothed[-1] > diverge * min(smoothed):
                stopped = i < num_steps - 1
                break
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
    return LRFinderResult(lrs, losses, smoothed, suggest(lrs, smoothed), rule, beta, stopped)


def find_lr(task, optimizer: str, mode=None, seed: int = 0, **kwargs) -> LRFinderResult:
    """The range test on a task's model (initial weights from ``seed``) with a named optimizer."""
    from .loop import build_model, default_mode, get_task, make_optimizer
    from .modes import batches

    task = get_task(task) if isinstance(task, str) else task
    data = task.data()
    model = build_model(task, seed)
    opt = make_optimizer(optimizer, model.parameters(), 1e-3)
    stream = batches(mode or default_mode(task), data.n_train, torch.Generator().manual_seed(10_000 + seed))

    def closure() -> Tensor:
        idx = next(stream)
        return task.loss(model(data.x_train[idx]), data.y_train[idx])

    return lr_range_test(model, opt, closure, **kwargs)
