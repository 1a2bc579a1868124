"""RMSProp (Tieleman & Hinton, 2012, Coursera lecture 6.5): AdaGrad with an EWMA of squares::

    V   = alpha * V + (1 - alpha) * g * g
    var = max(V - G * G, 0),  G = alpha * G + (1 - alpha) * g   centered=True (Graves, 2013)
    var = V                                                 otherwise
    d   = sqrt(var) + eps                                   torch.optim.RMSprop (default)
    d   = sqrt(var + eps)                                   eps_inside_sqrt=True (the seed's form)
    B   = momentum * B + g / d;  w = w - lr * B             momentum > 0
    w   = w - lr * g / d                                    otherwise
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_bool, check_nonnegative, check_positive, check_unit
from ._base import Number, Rule, descent_direction, ewma, is_zero, validator, zeros


def rmsprop(param: Tensor, grad: Tensor, square_avg: Tensor, grad_avg: Tensor | None = None,
            momentum_buffer: Tensor | None = None, *, step: Number = 1, lr: Number,
            alpha: Number = 0.99, eps: Number = 1e-8, weight_decay: Number = 0.0,
            momentum: Number = 0.0, centered: bool = False, maximize: bool = False,
            eps_inside_sqrt: bool = False) -> dict[str, Tensor]:
    """One RMSProp step; state names as in torch.optim.RMSprop."""
    g = descent_direction(param, grad, weight_decay, maximize)
    out: dict[str, Tensor] = {}
    v = ewma(square_avg, g * g, alpha)
    out["square_avg"] = v
    var = v
    if centered:
        ga = ewma(grad_avg, g, alpha)
        out["grad_avg"] = ga
        # V - G*G >= 0 in exact arithmetic (Cauchy-Schwarz: both are EWMAs of the same g with the
        # same weights, summing to 1 - alpha^t <= 1), but rounding can make it a hair negative,
        # e.g. alpha = 0, where V = g*g and G = g: sqrt would then turn finite input into NaN
        # (torch.optim does). Clamped at 0; bit-identical to torch wherever torch's is >= 0.
        var = torch.maximum(v - ga * ga, torch.zeros_like(v))
    denom = torch.sqrt(var + eps) if eps_inside_sqrt else torch.sqrt(var) + eps
    if is_zero(momentum):
        out["param"] = param - lr * (g / denom)
    else:
        buf = momentum * momentum_buffer + g / denom
        out["momentum_buffer"] = buf
        out["param"] = param - lr * buf
    return out


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    state = {"square_avg": zeros(param)}
    if not is_zero(group["momentum"]):
        state["momentum_buffer"] = zeros(param)
    if group["centered"]:
        state["grad_avg"] = zeros(param)
    return state


validate = validator(
    {"lr": check_nonnegative, "alpha": check_unit, "eps": check_positive, "weight_decay": check_nonnegative,
     "momentum": check_nonnegative, "centered": check_bool, "maximize": check_bool, "eps_inside_sqrt": check_bool},
    optional={"eps_inside_sqrt": False})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")} | {
        "eps_inside_sqrt": group.get("eps_inside_sqrt", False)}


RULE = Rule("rmsprop", rmsprop, init_state, hyperparams, validate)
