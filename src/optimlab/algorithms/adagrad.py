"""AdaGrad (Duchi, Hazan & Singer, 2011): a per-parameter step that shrinks with the sum of squares::

    lr_t = lr / (1 + (t - 1) * lr_decay)
    V    = V + g * g                           V0 = initial_accumulator_value
    w    = w - lr_t * g / (sqrt(V) + eps)      torch.optim.Adagrad (default)
    w    = w - lr_t * g / sqrt(V + eps)        eps_inside_sqrt=True (the seed's form)

``V`` never decreases, so the effective step ``lr_t / sqrt(V)`` vanishes over a long run.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_bool, check_nonnegative, check_positive
from ._base import Number, Rule, descent_direction, validator


def adagrad(param: Tensor, grad: Tensor, sum: Tensor, *, step: Number, lr: Number,
            lr_decay: Number = 0.0, weight_decay: Number = 0.0, eps: Number = 1e-10,
            maximize: bool = False, eps_inside_sqrt: bool = False) -> dict[str, Tensor]:
    """One AdaGrad step; ``sum`` is the accumulator V (torch's state name)."""
    g = descent_direction(param, grad, weight_decay, maximize)
    clr = lr / (1 + (step - 1) * lr_decay)
    acc = sum + g * g
    std = torch.sqrt(acc + eps) if eps_inside_sqrt else torch.sqrt(acc) + eps
    return {"param": param - clr * (g / std), "sum": acc}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"sum": torch.full_like(param, group["initial_accumulator_value"], memory_format=torch.preserve_format)}


validate = validator(
    {"lr": check_nonnegative, "lr_decay": check_nonnegative, "weight_decay": check_nonnegative,
     "initial_accumulator_value": check_nonnegative, "eps": check_positive, "maximize": check_bool,
     "eps_inside_sqrt": check_bool},
    optional={"eps_inside_sqrt": False})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in ("lr", "lr_decay", "weight_decay", "eps", "maximize")} | {
        "eps_inside_sqrt": group.get("eps_inside_sqrt", False)}


RULE = Rule("adagrad", adagrad, init_state, hyperparams, validate)
