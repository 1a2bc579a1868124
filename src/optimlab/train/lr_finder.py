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
or a loss is not finite. Three rules read a learning rate off the smoothed curve, each written here
from its documented definition (no code of the other libraries is used):

* ``"min/10"`` (optimlab's default): one tenth of the LR at the minimum of the smoothed loss (past
  the minimum the loss is already climbing, so a tenth of it is still in the fast-descent region);
* ``"valley"`` (fastai's ``valley``): the longest valley -- the longest strictly decreasing
  subsequence of the smoothed loss, after dropping the first tenth and the last 5 points of the
  ramp as fastai does -- and the LR halfway into it;
* ``"steepest"`` (torch-lr-finder's ``suggest_lr``): the LR where the smoothed loss falls fastest
  per ramp step, ``argmin gradient(loss)``, after skipping the first 10 and the last 5 points.
  (This replaces optimlab's earlier own "steepest" rule, which was measured as the weakest.)

The curve can also say that no rule should be trusted (:attr:`LRFinderResult.status`):

* ``"no-turn-up"``: the smoothed loss is still at its lowest at the end of the ramp (the test was
  not stopped by divergence): the minimum only says where the ramp ended -- extend ``end_lr``;
* ``"flat"``: the smoothed loss fell by less than ``FLAT_DROP`` (5%) of its starting value over the
  whole ramp: the curve does not single out a learning rate -- inconclusive.

Then :attr:`LRFinderResult.suggestion` is None and :attr:`LRFinderResult.message` says why.
:func:`find_lr_band` runs the test on ``k`` seeds and reports the median and the range of the
suggestions (the seed spread), with the same verdicts.

Under ``torch.distributed`` (a model wrapped in ``DistributedDataParallel``) every rank runs the
test on its own batches; each step's loss is averaged over the ranks (an all-reduce) before it is
smoothed and checked, so every rank records the same curve, stops at the same step and makes the
same suggestion.

The model's parameters and buffers and the optimizer's ``state_dict`` (its state and every group's
learning rate) are restored afterwards, even if the test raises.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..ewma import EWMA

RULES = ("min/10", "valley", "steepest")
FLAT_DROP = 0.05


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: dict[str, float | None] = field(default_factory=dict)
    rule: str = "min/10"
    beta: float = 0.9
    stopped_early: bool = False  # stopped on divergence before num_steps

    @property
    def min_at_end(self) -> bool:
        """Whether the smoothed loss was lowest in the last 5% of the recorded ramp."""
        lowest = int(np.nanargmin(self.smoothed))
        return lowest >= len(self.smoothed) - max(1, len(self.smoothed) // 20)

    @property
    def status(self) -> str:
        """``"ok"``, ``"flat"`` or ``"no-turn-up"`` (see the module docstring)."""
        s = np.asarray(self.smoothed, dtype=np.float64)
        if s[0] - np.nanmin(s) < FLAT_DROP * abs(s[0]):
            return "flat"
        if self.min_at_end and not self.stopped_early:
            return "no-turn-up"
        return "ok"

    @property
    def message(self) -> str:
        status = self.status
        if status == "no-turn-up":
            return f"no turn-up before the end of the ramp ({self.lrs[-1]:.3g}): extend end_lr"
        if status == "flat":
            return (f"flat curve: the smoothed loss fell by less than {FLAT_DROP:.0%} over the ramp: "
                    "inconclusive, no suggestion")
        return f"suggested lr {self.suggestion:.3g} (rule {self.rule})"

    @property
    def suggestion(self) -> float | None:
        """The suggested learning rate by :attr:`rule`, or None when the curve is not conclusive."""
        return self.suggestions.get(self.rule) if self.status == "ok" else None


def _check(name: str, value, low: float, high: float = math.inf, integer: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not (low <= value <= high) or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} in [{low:g}, {high:g}], got {value!r}")


def longest_decrease(values) -> tuple[int, int]:
    """(first, last) index of the longest strictly decreasing subsequence of ``values`` (the
    earliest-ending one among equals); O(n^2) dynamic programming over "longest ending at i"."""
    n = len(values)
    length, first = [1] * n, list(range(n))
    for i in range(n):
        for j in range(i):
            if values[j] > values[i] and length[j] + 1 > length[i]:
                length[i], first[i] = length[j] + 1, first[j]
    last = max(range(n), key=lambda i: (length[i], -i))
    return first[last], last


def suggest(lrs: list[float], smoothed: list[float]) -> dict[str, float | None]:
    """Every rule's suggestion from a recorded range test (see the module docstring); a rule whose
    trimmed curve is too short for it gives None."""
    if len(lrs) < 3:
        raise ValueError(f"the range test needs at least 3 recorded steps to suggest a learning rate, got {len(lrs)}")
    loss = np.asarray(smoothed, dtype=np.float64)
    n = len(loss)
    out: dict[str, float | None] = {"min/10": float(lrs[int(np.nanargmin(loss))] / 10)}
    lo, hi = n // 10, n - 5                      # fastai trims the first tenth and the last 5 points
    if hi - lo >= 2:
        first, last = longest_decrease(loss[lo:hi].tolist())
        out["valley"] = float(lrs[lo + first + (last - first) // 2])
    else:
        out["valley"] = None
    lo = 10                                     # torch-lr-finder skips the first 10 and the last 5
    out["steepest"] = float(lrs[lo + int(np.argmin(np.gradient(loss[lo:hi])))]) if hi - lo >= 2 else None
    return out


def _mean_over_ranks(value: float, group) -> float:
    """The average of ``value`` over the ranks of ``group`` (the value itself outside torch.distributed)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return float(t.item()) / dist.get_world_size(group)


def lr_range_test(model: nn.Module, optimizer: torch.optim.Optimizer, closure: Callable[[], Tensor],
                  start_lr: float = 1e-6, end_lr: float = 10.0, num_steps: int = 100, beta: float = 0.9,
                  diverge: float = 4.0, rule: str = "min/10", process_group=None) -> LRFinderResult:
    """Run the range test; ``closure()`` computes the loss of the next batch (forward pass only).

    Every group's learning rate is set to ``lr_i`` at step ``i``; gradients are zeroed, the loss
    back-propagated and ``optimizer.step()`` taken. Model and optimizer are restored at the end.
    Under ``torch.distributed`` the recorded loss is the mean over the ranks of ``process_group``
    (default: the world), so all ranks agree on the curve and the suggestion.
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
            value = _mean_over_ranks(float(loss.item()), process_group)
            if not math.isfinite(value):  # the same decision on every rank: the mean is non-finite
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


@dataclass
class LRBand:
    """The range test on several seeds: each seed's result, and the band of their suggestions."""

    results: list[LRFinderResult]

    @property
    def rule(self) -> str:
        return self.results[0].rule

    @property
    def status(self) -> str:
        """``"ok"`` when most seeds gave a suggestion, else the most frequent reason they did not."""
        counts = Counter(r.status for r in self.results)
        if 2 * counts["ok"] > len(self.results):
            return "ok"
        return max((s for s in counts if s != "ok"), key=lambda s: (counts[s], s))

    def suggestions(self, rule: str | None = None) -> list[float]:
        """Each conclusive seed's suggestion by ``rule`` (default: the band's rule)."""
        rule = rule or self.rule
        return [r.suggestions[rule] for r in self.results if r.status == "ok" and r.suggestions.get(rule) is not None]

    def band(self, rule: str | None = None) -> tuple[float, float, float] | None:
        """(median, lowest, highest) suggestion over the conclusive seeds; None if the band is not ok."""
        values = self.suggestions(rule)
        if self.status != "ok" or not values:
            return None
        return math.exp(statistics.median(math.log(v) for v in values)), min(values), max(values)

    @property
    def suggestion(self) -> float | None:
        b = self.band()
        return None if b is None else b[0]

    @property
    def message(self) -> str:
        k = len(self.results)
        b = self.band()
        if b is None:
            reasons = next(r.message for r in self.results if r.status == self.status)
            return f"{reasons} ({sum(r.status == self.status for r in self.results)} of {k} seeds)"
        spread = f"; the seeds disagree by {b[2] / b[1]:.0f}x" if b[2] > 10 * b[1] else ""
        return (f"suggested lr {b[0]:.3g} (rule {self.rule}; median over {len(self.suggestions())} of {k} seeds, "
                f"range {b[1]:.3g} .. {b[2]:.3g}{spread})")


def find_lr_band(task, optimizer: str, mode=None, seeds: int = 3, first_seed: int = 0, **kwargs) -> LRBand:
    """:func:`find_lr` on ``seeds`` seeds (initial weights and batch order), as a band."""
    _check("seeds", seeds, 1, 1000, integer=True)
    return LRBand([find_lr(task, optimizer, mode, first_seed + k, **kwargs) for k in range(seeds)])
