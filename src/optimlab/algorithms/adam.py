"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019)::

    w   = w * (1 - lr * wd)                    decoupled_weight_decay=True (AdamW)
    g   = g + wd * w                           otherwise (L2 in the gradient)
    m   = b1 * m + (1 - b1) * g                first moment: EWMA of gradients
    v   = b2 * v + (1 - b2) * g * g            second moment: EWMA of squared gradients
    v'  = max(v'_prev, v)                      amsgrad=True (Reddi et al., 2018), else v' = v
    w   = w - lr / bc1 * m / (sqrt(v') / sqrt(bc2) + eps)

with ``bc1 = 1 - b1**t`` and ``bc2 = 1 - b2**t`` (the default, torch.optim.Adam), or
``bc1 = bc2 = 1`` with ``bias_correction=False`` (the form of the seed's worked example: weight
0.5, lr 1e-3, grad 0.2 -> 0.49684 on the first step; with bias correction -> 0.499).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_betas, check_bool, check_nonnegative, check_positive
from ._base import Number, Rule, decayed, ewma, validator, zeros


def adam(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
         max_exp_avg_sq: Tensor | None = None, *, step: Number, lr: Number, beta1: Number = 0.9,
         beta2: Number = 0.999, eps: Number = 1e-8, weight_decay: Number = 0.0, amsgrad: bool = False,
         maximize: bool = False, decoupled_weight_decay: bool = False,
         bias_correction: bool = True) -> dict[str, Tensor]:
    """One Adam / AdamW step; see the module docstring."""
    param, g = decayed(param, grad, lr, weight_decay, maximize, decoupled_weight_decay)
    m = ewma(exp_avg, g, beta1)
    v = ewma(exp_avg_sq, g * g, beta2)
    out = {"exp_avg": m, "exp_avg_sq": v}
    if amsgrad:
        v = torch.maximum(max_exp_avg_sq, v)
        out["max_exp_avg_sq"] = v
    if bias_correction:
        step_size = lr / (1 - beta1 ** step)
        denom = torch.sqrt(v) / (1 - beta2 ** step) ** 0.5 + eps
    else:
        step_size = lr
        denom = torch.sqrt(v) + eps
    out["param"] = param - step_size * (m / denom)
    return out


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    state = {"exp_avg": zeros(param), "exp_avg_sq": zeros(param)}
    if group["amsgrad"]:
        state["max_exp_avg_sq"] = zeros(param)
    return state


def _tensor_hyperparameters(group: Mapping[str, Any]) -> None:
    """torch.optim.Adam's rules for tensor lr / betas: not with foreach=True unless capturable,
    and betas both floats or both tensors."""
    beta1, beta2 = group["betas"]
    if isinstance(beta1, Tensor) != isinstance(beta2, Tensor):
        raise ValueError(f"betas must be either both floats or both tensors, got {group['betas']!r}")
    if group.get("foreach") and not group.get("capturable"):
        for name, value in (("lr", group["lr"]), ("betas[0]", beta1), ("betas[1]", beta2)):
            if isinstance(value, Tensor):
                raise ValueError(f"{name} as a Tensor is not supported for capturable=False and foreach=True "
                                 f"(allowed: a float, or foreach=False)")


validate = validator(
    {"lr": check_nonnegative, "betas": check_betas, "eps": check_positive, "weight_decay": check_nonnegative,
     "amsgrad": check_bool, "maximize": check_bool, "decoupled_weight_decay": check_bool, "bias_correction": check_bool},
    optional={"bias_correction": True}, also=_tensor_hyperparameters)


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    beta1, beta2 = group["betas"]
    return {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "eps": group["eps"],
            "weight_decay": group["weight_decay"], "amsgrad": group["amsgrad"],
            "maximize": group["maximize"], "decoupled_weight_decay": group["decoupled_weight_decay"],
            "bias_correction": group.get("bias_correction", True)}


RULE = Rule("adam", adam, init_state, hyperparams, validate)
