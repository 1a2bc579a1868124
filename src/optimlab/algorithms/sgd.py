"""Gradient descent and its momentum forms: batch, mini-batch and stochastic GD, Momentum, Nesterov.

Plain gradient descent (Cauchy, 1847)::

    w = w - lr * g

Batch, mini-batch and stochastic gradient descent share this rule; they differ only in how many
examples the gradient ``g`` is averaged over (all, a batch, one), which is the caller's choice.

Momentum (Polyak, 1964) comes in three forms, chosen by ``momentum_form``:

``"torch"`` (default, torch.optim.SGD; Sutskever et al., 2013)::

    buf = g                                   on the first step
    buf = momentum * buf + (1 - dampening) * g    afterwards
    w   = w - lr * buf                        (Nesterov: w - lr * (g + momentum * buf))

``"ewma"`` (the seed's Momentum: the velocity is an exponentially weighted average, v0 = 0)::

    v = momentum * v + (1 - momentum) * g
    w = w - lr * v                            (Nesterov: w - lr * (momentum * v + (1 - momentum) * g))

``"lr_in_velocity"`` (the seed's NAG and classical momentum: the learning rate inside the velocity)::

    v = momentum * v + lr * g
    w = w - v                                 (Nesterov: w - (momentum * v + lr * g))

With a constant learning rate ``"torch"`` and ``"lr_in_velocity"`` give the same trajectory;
they part when a schedule changes ``lr``, since the velocity then remembers old learning rates.
Nesterov's look-ahead form (``v = b*v + lr*grad(w - b*v); w = w - v``) is the
``"lr_in_velocity"`` Nesterov rule above written in the look-ahead variable ``u = w - b*v``
(Sutskever et al., 2013, eq. 6-7); the lab runs the look-ahead form itself.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_bool, check_nonnegative, check_range, check_unit, one_of
from ._base import Number, Rule, descent_direction, ewma, is_zero, no_state, validator

MOMENTUM_FORMS = ("torch", "ewma", "lr_in_velocity")


def sgd(param: Tensor, grad: Tensor, momentum_buffer: Tensor | None = None, *,
        lr: Number, momentum: Number = 0.0, dampening: Number = 0.0, weight_decay: Number = 0.0,
        nesterov: bool = False, maximize: bool = False, momentum_form: str = "torch") -> dict[str, Tensor]:
    """One step of gradient descent with optional momentum; see the module docstring."""
    g = descent_direction(param, grad, weight_decay, maximize)
    if is_zero(momentum):
        return {"param": param - lr * g}

    if momentum_form == "torch":
        if momentum_buffer is None:
            buf = g.clone()
        else:
            buf = momentum * momentum_buffer + (1 - dampening) * g
        direction = g + momentum * buf if nesterov else buf
        return {"param": param - lr * direction, "momentum_buffer": buf}

    v = torch.zeros_like(g) if momentum_buffer is None else momentum_buffer
    if momentum_form == "ewma":
        v = ewma(v, g, momentum)
        direction = ewma(v, g, momentum) if nesterov else v
        return {"param": param - lr * direction, "momentum_buffer": v}
    if momentum_form == "lr_in_velocity":
        v = momentum * v + lr * g
        step = momentum * v + lr * g if nesterov else v
        return {"param": param - step, "momentum_buffer": v}
    raise ValueError(f"momentum_form must be one of {MOMENTUM_FORMS}, got {momentum_form!r}")


def _momentum_and_dampening(group: Mapping[str, Any]) -> None:
    form = group.get("momentum_form", "torch")
    if form != "torch":
        check_unit("momentum", group["momentum"])
        if float(group["dampening"]) != 0:
            raise ValueError(f"dampening applies only to momentum_form='torch' (allowed: 0 with "
                             f"momentum_form={form!r}), got dampening={group['dampening']!r}")
    if group["nesterov"] and (float(group["momentum"]) <= 0 or float(group["dampening"]) != 0):
        raise ValueError("nesterov=True requires momentum > 0 and dampening = 0, "
                         f"got momentum={group['momentum']!r}, dampening={group['dampening']!r}")


validate = validator(
    {"lr": check_nonnegative, "momentum_form": one_of(*MOMENTUM_FORMS), "momentum": check_nonnegative,
     "dampening": lambda name, value: check_range(name, value, 0.0, 1.0, high_open=False),
     "weight_decay": check_nonnegative, "nesterov": check_bool, "maximize": check_bool},
    optional={"momentum_form": "torch"}, also=_momentum_and_dampening)


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")} | {
        "momentum_form": group.get("momentum_form", "torch")}


# a sparse gradient runs the same formulas (torch.optim.SGD's sparse support): sparse COO arithmetic
# gives a sparse momentum buffer, and ``param - lr * g`` moves only the rows the gradient names
RULE = Rule("sgd", sgd, no_state, hyperparams, validate, counts_steps=False, sparse_update=sgd)
