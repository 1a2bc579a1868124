"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2)::

    c = b1 * m + (1 - b1) * g                        interpolation used for the step
    w = w * (1 - lr * wd) - lr * sign(c)             every coordinate moves by exactly lr
    m = b2 * m + (1 - b2) * g                        momentum ("exp_avg"), with the slower b2

The update is a sign, so its size does not adapt to the gradient's: the paper's lr is 3-10x
smaller than AdamW's, and its weight decay 3-10x larger (defaults: lr 1e-4, betas (0.9, 0.99)).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_betas, check_bool, check_nonnegative
from ._base import Number, Rule, decoupled_decay, ewma, validator, zeros


def lion(param: Tensor, grad: Tensor, exp_avg: Tensor, *, step: Number = 1, lr: Number = 1e-4,
         beta1: Number = 0.9, beta2: Number = 0.99, weight_decay: Number = 0.0,
         maximize: bool = False) -> dict[str, Tensor]:
    """One Lion step; see the module docstring."""
    g = -grad if maximize else grad
    direction = torch.sign(ewma(exp_avg, g, beta1))
    param = decoupled_decay(param, lr, weight_decay)
    return {"param": param - lr * direction, "exp_avg": ewma(exp_avg, g, beta2)}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"exp_avg": zeros(param)}


validate = validator({"lr": check_nonnegative, "betas": check_betas, "weight_decay": check_nonnegative,
                      "maximize": check_bool})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    beta1, beta2 = group["betas"]
    return {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "weight_decay": group["weight_decay"],
            "maximize": group["maximize"]}


RULE = Rule("lion", lion, init_state, hyperparams, validate)
