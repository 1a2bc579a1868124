"""AdEMAMix (Pagliardini, Ablin & Grangier, 2024, "The AdEMAMix Optimizer: Better, Faster,
Older", Algorithm 1): Adam whose numerator mixes a fast and a very slow EMA of gradients::

    m1 = b1 * m1 + (1 - b1) * g                      fast EMA ("exp_avg_fast"), bias-corrected
    m2 = b3_t * m2 + (1 - b3_t) * g                  slow EMA ("exp_avg_slow"), not corrected
    v  = b2 * v + (1 - b2) * g * g                   ("exp_avg_sq")
    w  = w * (1 - lr * wd)                           decoupled weight decay
    w  = w - lr * (m1 / (1 - b1**t) + alpha_t * m2) / (sqrt(v / (1 - b2**t)) + eps)

with the paper's warmup schedulers (off when the warmup length is None)::

    alpha_t = min(t * alpha / T_alpha, alpha)
    b3_t    = min(exp(ln(b1) ln(b3) / ((1 - t/T_b3) ln(b3) + (t/T_b3) ln(b1))), b3)

Defaults (lr 1e-3, betas (0.9, 0.999, 0.9999), alpha 2) are the paper's code's.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_bool, check_nonnegative, check_unit
from ._base import Number, Rule, decoupled_decay, descent_direction, ewma, validator, zeros


def alpha_schedule(step: Number, alpha: Number, warmup: Number | None) -> Number:
    return alpha if warmup is None else min(step * alpha / warmup, alpha)


def beta3_schedule(step: Number, beta_start: Number, beta3: Number, warmup: Number | None) -> Number:
    """The slow EMA's decay, warmed from ``beta_start`` (= b1) so its half-life grows linearly."""
    if warmup is None:
        return beta3
    frac = step / warmup
    log_start, log_end = math.log(beta_start), math.log(beta3)
    return min(math.exp(log_start * log_end / ((1 - frac) * log_end + frac * log_start)), beta3)


def ademamix(param: Tensor, grad: Tensor, exp_avg_fast: Tensor, exp_avg_slow: Tensor, exp_avg_sq: Tensor, *,
             step: Number, lr: Number = 1e-3, beta1: Number = 0.9, beta2: Number = 0.999, beta3: Number = 0.9999,
             alpha: Number = 2.0, beta3_warmup: Number | None = None, alpha_warmup: Number | None = None,
             eps: Number = 1e-8, weight_decay: Number = 0.0, maximize: bool = False) -> dict[str, Tensor]:
    """One AdEMAMix step; see the module docstring."""
    g = descent_direction(param, grad, 0.0, maximize)
    b3 = beta3_schedule(step, beta1, beta3, beta3_warmup)
    mix = alpha_schedule(step, alpha, alpha_warmup)
    m1 = ewma(exp_avg_fast, g, beta1)
    m2 = ewma(exp_avg_slow, g, b3)
    v = ewma(exp_avg_sq, g * g, beta2)
    denom = torch.sqrt(v / (1 - beta2 ** step)) + eps
    param = decoupled_decay(param, lr, weight_decay)
    new_param = param - lr * ((m1 / (1 - beta1 ** step) + mix * m2) / denom)
    return {"param": new_param, "exp_avg_fast": m1, "exp_avg_slow": m2, "exp_avg_sq": v}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"exp_avg_fast": zeros(param), "exp_avg_slow": zeros(param), "exp_avg_sq": zeros(param)}


def _check_betas3(name: str, value: Any) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"{name} must be a triple (beta1, beta2, beta3), each in [0, 1), got {value!r}")
    for i, beta in enumerate(value):
        check_unit(f"{name}[{i}]", beta)


def _check_warmup(name: str, value: Any) -> None:
    if value is not None:
        check_nonnegative(name, value)
        if float(value) == 0:
            raise ValueError(f"{name} must be None (no warmup) or > 0, got {value!r}")


validate = validator({"lr": check_nonnegative, "betas": _check_betas3, "alpha": check_nonnegative,
                      "beta3_warmup": _check_warmup, "alpha_warmup": _check_warmup, "eps": check_nonnegative,
                      "weight_decay": check_nonnegative, "maximize": check_bool})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    beta1, beta2, beta3 = group["betas"]
    return {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "beta3": beta3} | {
        k: group[k] for k in ("alpha", "beta3_warmup", "alpha_warmup", "eps", "weight_decay", "maximize")}


RULE = Rule("ademamix", ademamix, init_state, hyperparams, validate)
