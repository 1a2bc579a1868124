"""Adamax (Kingma & Ba, 2015, section 7.1): Adam with the infinity norm in place of the L2 norm::

    g = g + wd * w                                   L2 weight decay (maximize: g = -g first)
    m = b1 * m + (1 - b1) * g                        first moment ("exp_avg")
    u = max(b2 * u, |g| + eps)                       exponentially weighted infinity norm ("exp_inf")
    w = w - lr / (1 - b1**t) * m / u

``eps`` inside the max is torch.optim.Adamax's placement (it keeps ``u`` away from zero).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_betas, check_bool, check_nonnegative
from ._base import Number, Rule, descent_direction, ewma, validator, zeros


def adamax(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_inf: Tensor, *, step: Number, lr: Number,
           beta1: Number = 0.9, beta2: Number = 0.999, eps: Number = 1e-8, weight_decay: Number = 0.0,
           maximize: bool = False) -> dict[str, Tensor]:
    """One Adamax step; see the module docstring."""
    g = descent_direction(param, grad, weight_decay, maximize)
    m = ewma(exp_avg, g, beta1)
    magnitude = torch.maximum(g, -g)  # |g|, as a maximum so the fused path can trace it
    u = torch.maximum(exp_inf * beta2, magnitude + eps)
    step_size = lr / (1 - beta1 ** step)
    return {"param": param - step_size * (m / u), "exp_avg": m, "exp_inf": u}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"exp_avg": zeros(param), "exp_inf": zeros(param)}


validate = validator({"lr": check_nonnegative, "betas": check_betas, "eps": check_nonnegative,
                      "weight_decay": check_nonnegative, "maximize": check_bool})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    beta1, beta2 = group["betas"]
    return {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "eps": group["eps"],
            "weight_decay": group["weight_decay"], "maximize": group["maximize"]}


RULE = Rule("adamax", adamax, init_state, hyperparams, validate)
