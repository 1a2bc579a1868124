"""Adadelta (Zeiler, 2012, "ADADELTA: An Adaptive Learning Rate Method")::

    g  = g + wd * w                                  L2 weight decay (maximize: g = -g first)
    V  = rho * V + (1 - rho) * g * g                 EWMA of squared gradients ("square_avg")
    dx = sqrt(U + eps) / sqrt(V + eps) * g           the step in units of the parameter
    U  = rho * U + (1 - rho) * dx * dx               EWMA of squared steps ("acc_delta")
    w  = w - lr * dx

The ratio of the two RMS values gives the step the parameter's units, so ``lr = 1`` (torch's
default) is the paper's method; ``lr`` scales it.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_bool, check_nonnegative, check_range
from ._base import Number, Rule, descent_direction, ewma, validator, zeros


def adadelta(param: Tensor, grad: Tensor, square_avg: Tensor, acc_delta: Tensor, *, step: Number = 1,
             lr: Number = 1.0, rho: Number = 0.9, eps: Number = 1e-6, weight_decay: Number = 0.0,
             maximize: bool = False) -> dict[str, Tensor]:
    """One Adadelta step; see the module docstring."""
    g = descent_direction(param, grad, weight_decay, maximize)
    v = ewma(square_avg, g * g, rho)
    delta = torch.sqrt(acc_delta + eps) / torch.sqrt(v + eps) * g
    u = ewma(acc_delta, delta * delta, rho)
    return {"param": param - lr * delta, "square_avg": v, "acc_delta": u}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"square_avg": zeros(param), "acc_delta": zeros(param)}


validate = validator(
    {"lr": check_nonnegative, "rho": lambda name, value: check_range(name, value, 0.0, 1.0, high_open=False),
     "eps": check_nonnegative, "weight_decay": check_nonnegative, "maximize": check_bool})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in ("lr", "rho", "eps", "weight_decay", "maximize")}


RULE = Rule("adadelta", adadelta, init_state, hyperparams, validate)
