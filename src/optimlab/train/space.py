"""The declared search space and the default hyperparameters of each training optimizer.

:func:`search_space` is the ONE place the benchmark protocol reads a search space from. The
catalogue (issue 10) will carry each entry's space as ``Entry.tune``; when it lands, the body of
:func:`search_space` becomes ``return catalogue.get(name).tune`` and :func:`build` becomes
``catalogue.get(name).make(params, **hp)``.

The space is the learning rate alone, log-uniform over five decades, for every optimizer: with a
budget of a few trials per study, tuning one dimension for everyone is the fair small-budget
protocol (Schmidt et al. 2021, "Descending through a Crowded Valley", tune the learning rate only
at their "small" budget); the other hyperparameters stay at their library defaults.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch

from .._names import unknown_name_error
from .loop import OPTIMIZER_CONFIGS


@dataclass(frozen=True)
class Range:
    """A continuous hyperparameter range, sampled uniformly in ``log`` space when ``log``."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"a range needs finite low < high, got [{self.low!r}, {self.high!r}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low!r}")

    def at(self, u: float) -> float:
        """The value at quantile ``u`` in [0, 1) of the range (a unit-cube point mapped into it)."""
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)


LR_RANGE = Range(1e-4, 10.0, log=True)


def _check(name: str) -> None:
    if name not in OPTIMIZER_CONFIGS:
        raise unknown_name_error("optimizer", name, OPTIMIZER_CONFIGS)


def search_space(name: str) -> dict[str, Range]:
    """The declared search space of optimizer ``name``: ``{constructor argument: Range}``."""
    _check(name)
    return {"lr": LR_RANGE}


def default_hparams(name: str) -> dict[str, Any]:
    """The library defaults of the searched arguments (the drop-in class's signature defaults)."""
    _check(name)
    cls, fixed = OPTIMIZER_CONFIGS[name]
    signature = inspect.signature(cls.__init__).parameters
    return {arg: fixed.get(arg, signature[arg].default) for arg in search_space(name)}


def build(name: str, params, hp: dict[str, Any]) -> torch.optim.Optimizer:
    """Optimizer ``name`` (its fixed variant options) with hyperparameters ``hp``."""
    _check(name)
    cls, fixed = OPTIMIZER_CONFIGS[name]
    return cls(params, **{**fixed, **hp})
