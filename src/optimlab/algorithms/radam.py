"""RAdam (Liu et al., 2020, "On the Variance of the Adaptive Learning Rate and Beyond")::

    w     = w * (1 - lr * wd)                        decoupled_weight_decay=True
    g     = g + wd * w                               otherwise (L2 in the gradient)
    m     = b1 * m + (1 - b1) * g
    v     = b2 * v + (1 - b2) * g * g
    rho_inf = 2 / (1 - b2) - 1
    rho_t   = rho_inf - 2 * t * b2**t / (1 - b2**t)  length of the approximated simple moving average
    r_t     = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
    w     = w - lr * m / (1 - b1**t) * r_t * sqrt(1 - b2**t) / (sqrt(v) + eps)    if rho_t > 5
    w     = w - lr * m / (1 - b1**t)                                               otherwise (SGD with momentum)

The rectifier ``r_t`` turns the adaptive step on only once the variance of ``v`` is tractable,
a warmup derived from the formula rather than scheduled by hand.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_betas, check_bool, check_nonnegative
from ._base import Number, Rule, decayed, ewma, validator, zeros


def radam(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *, step: Number, lr: Number,
          beta1: Number = 0.9, beta2: Number = 0.999, eps: Number = 1e-8, weight_decay: Number = 0.0,
          decoupled_weight_decay: bool = False, maximize: bool = False) -> dict[str, Tensor]:
    """One RAdam step; see the module docstring."""
    param, g = decayed(param, grad, lr, weight_decay, maximize, decoupled_weight_decay)
    m = ewma(exp_avg, g, beta1)
    v = ewma(exp_avg_sq, g * g, beta2)
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    m_hat = m / bc1
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2 ** step / bc2
    if rho_t > 5.0:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        adaptive = bc2 ** 0.5 / (torch.sqrt(v) + eps)
        new_param = param - m_hat * lr * adaptive * rect
    else:
        new_param = param - m_hat * lr
    return {"param": new_param, "exp_avg": m, "exp_avg_sq": v}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"exp_avg": zeros(param), "exp_avg_sq": zeros(param)}


validate = validator({"lr": check_nonnegative, "betas": check_betas, "eps": check_nonnegative,
                      "weight_decay": check_nonnegative, "decoupled_weight_decay": check_bool,
                      "maximize": check_bool})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    beta1, beta2 = group["betas"]
    return {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "eps": group["eps"],
            "weight_decay": group["weight_decay"], "decoupled_weight_decay": group["decoupled_weight_decay"],
            "maximize": group["maximize"]}


RULE = Rule("radam", radam, init_state, hyperparams, validate)
