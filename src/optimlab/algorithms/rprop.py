"""Rprop (Riedmiller & Braun, 1993, "A Direct Adaptive Method for Faster Backpropagation Learning:
The RPROP Algorithm"), the variant without weight backtracking, as torch.optim.Rprop::

    s      = sign(g * g_prev)
    f      = eta_plus   where s > 0,   eta_minus where s < 0,   1 where s = 0
    size   = clamp(size * f, step_size_min, step_size_max)         per-weight step ("step_size")
    g      = 0          where s < 0                                 the sign flipped: no move now
    w      = w - sign(g) * size
    g_prev = g                                                      ("prev")

Only the sign of the gradient is used; each weight's step grows while the sign holds and shrinks
when it flips. ``step_size`` starts at ``lr``. (Full-batch method: on mini-batches the sign is noise.)
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_bool, check_nonnegative
from ._base import Number, Rule, filled, validator, zeros


def rprop(param: Tensor, grad: Tensor, prev: Tensor, step_size: Tensor, *, step: Number = 1, lr: Number = 1e-2,
          eta_minus: Number = 0.5, eta_plus: Number = 1.2, step_size_min: Number = 1e-6,
          step_size_max: Number = 50.0, maximize: bool = False) -> dict[str, Tensor]:
    """One Rprop step; see the module docstring."""
    g = -grad if maximize else grad
    s = torch.sign(g * prev)
    factor = torch.where(s > 0, eta_plus, torch.where(s < 0, eta_minus, torch.ones_like(g)))
    size = torch.clamp(step_size * factor, step_size_min, step_size_max)
    g = torch.where(s < 0, torch.zeros_like(g), g)
    return {"param": param - torch.sign(g) * size, "prev": g, "step_size": size}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"prev": zeros(param), "step_size": filled(param, group["lr"])}  # complex: both parts alike


def _check_etas(name: str, value: Any) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not 0.0 < value[0] < 1.0 < value[1]:
        raise ValueError(f"{name} must be a pair (eta_minus, eta_plus) with 0 < eta_minus < 1 < eta_plus, "
                         f"got {value!r}")


def _check_step_sizes(name: str, value: Any) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}")


validate = validator({"lr": check_nonnegative, "etas": _check_etas, "step_sizes": _check_step_sizes,
                      "maximize": check_bool})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    (eta_minus, eta_plus), (low, high) = group["etas"], group["step_sizes"]
    return {"lr": group["lr"], "eta_minus": eta_minus, "eta_plus": eta_plus, "step_size_min": low,
            "step_size_max": high, "maximize": group["maximize"]}


RULE = Rule("rprop", rprop, init_state, hyperparams, validate)
