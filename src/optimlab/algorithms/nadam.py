"""Nadam (Dozat, 2016, "Incorporating Nesterov Momentum into Adam"): Adam with a Nesterov step::

    mu_t  = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))     momentum_schedule=True (torch default)
    mu_t  = b1                                                 momentum_schedule=False (plain Nadam)
    P_t   = P_{t-1} * mu_t                                     state "mu_product", P_0 = 1
    m     = b1 * m + (1 - b1) * g
    v     = b2 * v + (1 - b2) * g * g
    d     = sqrt(v / (1 - b2**t)) + eps
    w     = w - lr * (1 - mu_t) / (1 - P_t) * g / d - lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / d

Weight decay is L2 in the gradient, or decoupled (``w = w * (1 - lr * wd)``, Loshchilov & Hutter)
with ``decoupled_weight_decay=True``, as in torch.optim.NAdam.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_betas, check_bool, check_nonnegative, check_positive
from ._base import Number, Rule, decayed, ewma, validator, zeros
from .._scalar import scalar_dtype


def momentum_coefficient(beta1: Number, step: Number, momentum_decay: Number, schedule: bool) -> Number:
    """Dozat's warming momentum ``mu_t``; ``beta1`` itself without the schedule."""
    if not schedule:
        return beta1
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def nadam(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, mu_product: Number, *,
          step: Number, lr: Number, beta1: Number = 0.9, beta2: Number = 0.999, eps: Number = 1e-8,
          weight_decay: Number = 0.0, momentum_decay: Number = 4e-3, decoupled_weight_decay: bool = False,
          maximize: bool = False, momentum_schedule: bool = True) -> dict[str, Any]:
    """One Nadam step; see the module docstring."""
    param, g = decayed(param, grad, lr, weight_decay, maximize, decoupled_weight_decay)
    mu = momentum_coefficient(beta1, step, momentum_decay, momentum_schedule)
    mu_next = momentum_coefficient(beta1, step + 1, momentum_decay, momentum_schedule)
    mu_product = mu_product * mu
    m = ewma(exp_avg, g, beta1)
    v = ewma(exp_avg_sq, g * g, beta2)
    denom = torch.sqrt(v / (1 - beta2 ** step)) + eps
    grad_coef = lr * (1 - mu) / (1 - mu_product)
    avg_coef = lr * mu_next / (1 - mu_product * mu_next)
    new_param = param - grad_coef * (g / denom) - avg_coef * (m / denom)
    return {"param": new_param, "exp_avg": m, "exp_avg_sq": v, "mu_product": mu_product}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"mu_product": torch.tensor(1.0, dtype=scalar_dtype()),
            "exp_avg": zeros(param), "exp_avg_sq": zeros(param)}


validate = validator(
    {"lr": check_nonnegative, "betas": check_betas, "eps": check_positive, "weight_decay": check_nonnegative,
     "momentum_decay": check_nonnegative, "decoupled_weight_decay": check_bool, "maximize": check_bool,
     "momentum_schedule": check_bool},
    optional={"momentum_schedule": True})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    beta1, beta2 = group["betas"]
    return {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "eps": group["eps"],
            "weight_decay": group["weight_decay"], "momentum_decay": group["momentum_decay"],
            "decoupled_weight_decay": group["decoupled_weight_decay"], "maximize": group["maximize"],
            "momentum_schedule": group.get("momentum_schedule", True)}


RULE = Rule("nadam", nadam, init_state, hyperparams, validate, scalar_state=("mu_product",))
