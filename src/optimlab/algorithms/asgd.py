"""Averaged SGD (Polyak & Juditsky, 1992; the decaying step of Bottou, 2012, "Stochastic Gradient
Descent Tricks", section 5.3), as torch.optim.ASGD::

    g    = g + wd * w                                L2 weight decay (maximize: g = -g first)
    w    = w * (1 - lambd * eta) - eta * g           SGD step with its own decay term
    ax   = w                                         while mu = 1 (t <= t0)
    ax   = ax + mu * (w - ax)                        the running average of the iterates afterwards
    eta  = lr / (1 + lambd * lr * t) ** alpha        the step for the next iteration
    mu   = 1 / max(1, t - t0)                        the averaging weight for the next iteration

``eta`` and ``mu`` are 0-dim state (torch's names); ``ax`` holds the averaged parameters, which
the caller reads (``optimizer.state[p]["ax"]``) to evaluate the averaged model.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_bool, check_nonnegative, check_range
from .._scalar import scalar_dtype
from ._base import Number, Rule, descent_direction, validator, zeros


def asgd(param: Tensor, grad: Tensor, ax: Tensor, eta: Number, mu: Number, *, step: Number, lr: Number,
         lambd: Number = 1e-4, alpha: Number = 0.75, t0: Number = 1e6, weight_decay: Number = 0.0,
         maximize: bool = False) -> dict[str, Any]:
    """One ASGD step; see the module docstring."""
    g = descent_direction(param, grad, weight_decay, maximize)
    param = param * (1 - lambd * eta) - eta * g
    average = param.clone() if mu == 1 else ax + (param - ax) * mu
    next_eta = lr / ((1 + lambd * lr * step) ** alpha)
    next_mu = 1 / max(1, step - t0)
    return {"param": param, "ax": average, "eta": next_eta, "mu": next_mu}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Any]:
    lr = group["lr"]
    if torch.is_tensor(lr):  # a one-element lr of any shape gives 0-dim state, as torch; the lab's
        eta = lr.detach().to(scalar_dtype()).clone()  # batch keeps one value per trajectory
        eta = eta.reshape(()) if eta.numel() == 1 else eta
    else:
        eta = torch.tensor(lr, dtype=scalar_dtype())
    return {"eta": eta, "mu": torch.ones((), dtype=scalar_dtype()), "ax": zeros(param)}


validate = validator({"lr": check_nonnegative, "lambd": lambda name, value: check_range(name, value, -float("inf")),
                      "alpha": lambda name, value: check_range(name, value, -float("inf")),
                      "t0": lambda name, value: check_range(name, value, -float("inf")),
                      "weight_decay": check_nonnegative, "maximize": check_bool})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in ("lr", "lambd", "alpha", "t0", "weight_decay", "maximize")}


RULE = Rule("asgd", asgd, init_state, hyperparams, validate, scalar_state=("eta", "mu"))
