"""Schedule-Free SGD and AdamW (Defazio et al., 2024, "The Road Less Scheduled", Algorithm 1)::

    y_t     = (1 - beta) * z_t + beta * x_t          the point the gradient is taken at
    z_{t+1} = z_t - lr_t * u_t                       the base (SGD or AdamW) step
    x_{t+1} = (1 - c_{t+1}) * x_t + c_{t+1} * z_{t+1}      the averaged point (evaluate here)
    c_{t+1} = t^r lr_t^p / sum_{i<=t} i^r lr_i^p     (r = 0, p = 2: weights proportional to lr_t^2)

SGD:   ``u_t = g_t + wd * y_t``,  ``lr_t = lr * min(1, t / warmup_steps)``.
AdamW: ``v = b2 * v + (1 - b2) * g * g``,  ``u_t = g_t / (sqrt(v) + eps) + wd * y_t``,
       ``lr_t = lr * min(1, t / warmup_steps) * sqrt(1 - b2**t)``.

There is no learning-rate schedule: the averaging replaces it. As in the authors' code, the
parameter holds ``y`` while training and only ``z`` is stored ("z", and the running
``weight_sum``); eliminating ``x`` gives the step this module takes::

    y_{t+1} = y_t + c (z_t - y_t) + lr_t (beta (1 - c) - 1) u_t
    z_{t+1} = z_t - lr_t u_t

``evaluation_point`` / ``training_point`` move the parameter between ``y`` and ``x`` (the
optimizer's ``eval()`` / ``train()``): evaluate and checkpoint the model at ``x``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_betas, check_bool, check_nonnegative, check_unit
from .._scalar import scalar_dtype
from ._base import Number, Rule, descent_direction, ewma, is_zero, validator, zeros


def warmed_lr(lr: Number, step: Number, warmup_steps: Number) -> Number:
    return lr * min(1.0, step / warmup_steps) if warmup_steps > 0 else lr


def _advance(y: Tensor, z: Tensor, u: Tensor, weight_sum: Number, lr_t: Number, step: Number, beta: Number,
             r: Number, weight_lr_power: Number) -> dict[str, Any]:
    weight = step ** r * lr_t ** weight_lr_power
    weight_sum = weight_sum + weight
    if torch.is_tensor(weight_sum) and weight_sum.numel() > 1:  # the lab's batch: one sum per trajectory
        c = torch.where(weight_sum != 0, weight / torch.where(weight_sum != 0, weight_sum, 1.0), 0.0)
    else:
        c = weight / weight_sum if weight_sum != 0 else 0.0
    new_y = y + c * (z - y) + lr_t * (beta * (1 - c) - 1) * u
    return {"param": new_y, "z": z - lr_t * u, "weight_sum": weight_sum}


def schedule_free_sgd(param: Tensor, grad: Tensor, z: Tensor, weight_sum: Number, *, step: Number,
                      lr: Number = 1.0, momentum: Number = 0.9, weight_decay: Number = 0.0,
                      warmup_steps: Number = 0, r: Number = 0.0, weight_lr_power: Number = 2.0,
                      maximize: bool = False) -> dict[str, Any]:
    """One Schedule-Free SGD step at ``param = y``; see the module docstring."""
    u = descent_direction(param, grad, weight_decay, maximize)
    return _advance(param, z, u, weight_sum, warmed_lr(lr, step, warmup_steps), step, momentum, r,
                    weight_lr_power)


def schedule_free_adamw(param: Tensor, grad: Tensor, z: Tensor, exp_avg_sq: Tensor, weight_sum: Number, *,
                        step: Number, lr: Number = 2.5e-3, beta1: Number = 0.9, beta2: Number = 0.999,
                        eps: Number = 1e-8, weight_decay: Number = 0.0, warmup_steps: Number = 0,
                        r: Number = 0.0, weight_lr_power: Number = 2.0, maximize: bool = False) -> dict[str, Any]:
    """One Schedule-Free AdamW step at ``param = y``; see the module docstring."""
    g = descent_direction(param, grad, 0.0, maximize)
    v = ewma(exp_avg_sq, g * g, beta2)
    u = g / (torch.sqrt(v) + eps)
    if not is_zero(weight_decay):
        u = u + weight_decay * param
    lr_t = warmed_lr(lr, step, warmup_steps) * (1 - beta2 ** step) ** 0.5
    return _advance(param, z, u, weight_sum, lr_t, step, beta1, r, weight_lr_power) | {"exp_avg_sq": v}


def evaluation_point(y: Tensor, z: Tensor, beta: Number) -> Tensor:
    """``x = (y - (1 - beta) z) / beta``: the averaged point, where the model is evaluated."""
    return y + (1 - 1 / beta) * (z - y)


def training_point(x: Tensor, z: Tensor, beta: Number) -> Tensor:
    """``y = (1 - beta) z + beta x``: the point the next gradient is taken at."""
    return x + (1 - beta) * (z - x)


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    state = {"z": param.clone(), "weight_sum": torch.zeros((), dtype=scalar_dtype())}
    if "betas" in group:
        state["exp_avg_sq"] = zeros(param)
    return state


def _check_momentum(name: str, value: Any) -> None:
    check_unit(name, value)
    if float(value) == 0:
        raise ValueError(f"{name} must be in (0, 1) (x is recovered from y and z by dividing by it), got {value!r}")


_COMMON = {"lr": check_nonnegative, "weight_decay": check_nonnegative, "warmup_steps": check_nonnegative,
           "r": check_nonnegative, "weight_lr_power": check_nonnegative, "maximize": check_bool}
validate_sgd = validator({**_COMMON, "momentum": _check_momentum})
validate_adamw = validator({**_COMMON, "betas": lambda name, value: (check_betas(name, value),
                                                                    _check_momentum(f"{name}[0]", value[0])),
                            "eps": check_nonnegative})


def _shared(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in ("lr", "weight_decay", "warmup_steps", "r", "weight_lr_power", "maximize")}


def hyperparams_sgd(group: Mapping[str, Any]) -> dict[str, Any]:
    return _shared(group) | {"momentum": group["momentum"]}


def hyperparams_adamw(group: Mapping[str, Any]) -> dict[str, Any]:
    beta1, beta2 = group["betas"]
    return _shared(group) | {"beta1": beta1, "beta2": beta2, "eps": group["eps"]}


def interpolation_beta(group: Mapping[str, Any]) -> Number:
    """The group's ``beta`` of ``y = (1 - beta) z + beta x``."""
    return group["betas"][0] if "betas" in group else group["momentum"]


SGD_RULE = Rule("sgdschedulefree", schedule_free_sgd, init_state, hyperparams_sgd, validate_sgd,
                scalar_state=("weight_sum",))
ADAMW_RULE = Rule("adamwschedulefree", schedule_free_adamw, init_state, hyperparams_adamw, validate_adamw,
                  scalar_state=("weight_sum",))
