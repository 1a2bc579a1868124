"""What every update rule shares: the rule record, the EWMA primitive, and gradient preparation.

An update rule is a pure function ``update(param, grad, **state, step=..., **hyperparameters)``
that returns a dict with the new ``"param"`` and the new state tensors. Hyperparameters may be
Python numbers or tensors that broadcast against the parameter (the lab sweeps them that way);
boolean options are Python ``bool``. State keys use torch.optim's names, so a ``state_dict``
moves between optimlab and torch.optim unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

Number = float | Tensor


def ewma(average: Tensor, value: Tensor, beta: Number) -> Tensor:
    """The exponentially weighted moving average step ``V_t = beta * V_{t-1} + (1 - beta) * x_t``.

    The one primitive under Momentum (EWMA of gradients), RMSProp (EWMA of squared gradients),
    Adam and Nadam (both). Written as a lerp, ``V + (1 - beta) * (x - V)``, as torch.optim does.
    """
    return average + (1 - beta) * (value - average)


def is_zero(value: Number) -> bool:
    """True for a Python number equal to zero; a tensor hyperparameter is never skipped."""
    return not isinstance(value, Tensor) and value == 0


def descent_direction(param: Tensor, grad: Tensor, weight_decay: Number, maximize: bool) -> Tensor:
    """The gradient the rule follows: ``g = -grad`` when maximizing, plus L2 decay ``wd * param``."""
    g = -grad if maximize else grad
    if not is_zero(weight_decay):
        g = g + weight_decay * param
    return g


def decoupled_decay(param: Tensor, lr: Number, weight_decay: Number) -> Tensor:
    """Decoupled weight decay (Loshchilov & Hutter, 2019): ``param * (1 - lr * wd)``."""
    if is_zero(weight_decay):
        return param
    return param * (1 - lr * weight_decay)


def decayed(param: Tensor, grad: Tensor, lr: Number, weight_decay: Number, maximize: bool,
            decoupled: bool) -> tuple[Tensor, Tensor]:
    """Adam-family weight decay: ``(param * (1 - lr * wd), g)`` when ``decoupled`` (AdamW),
    else ``(param, g + wd * param)`` (L2); ``g`` is the gradient followed (negated when maximizing)."""
    if decoupled:
        param = decoupled_decay(param, lr, weight_decay)
        return param, descent_direction(param, grad, 0.0, maximize)
    return param, descent_direction(param, grad, weight_decay, maximize)


@dataclass(frozen=True)
class Rule:
    """One algorithm: its pure update, its initial state, and how a param group feeds it.

    ``update``        the math, written once; returns ``{"param": ..., <state name>: ...}``.
    ``init_state``    ``(param, group) -> {name: tensor}``: state created before the first step
                      (entries a rule creates lazily, like SGD's momentum buffer, are absent).
    ``hyperparams``   ``group -> keyword arguments`` of ``update`` (torch names to rule names).
    ``validate``      ``group -> None``, raising ValueError/TypeError naming the argument.
    ``counts_steps``  keep torch's per-parameter ``state["step"]`` and pass ``step=`` to update.
    ``scalar_state``  0-dim state entries passed to ``update`` as Python floats.
    ``sparse_update`` the rule for a sparse (COO) gradient, same signature as ``update``; None
                      when the algorithm does not take sparse gradients (torch.optim's set). A
                      sparse tensor it returns for a dense parameter or state entry is an
                      increment at the rows it names (added in place: O(rows), not O(tensor)).
    ``sparse_only``   dense gradients are refused (SparseAdam).
    ``complex_ok``    complex parameters are stepped as pairs of reals; False refuses them.
    ``int_step``      ``state["step"]`` is a Python int, not a 0-dim tensor (SparseAdam's, as in torch).
    ``check_param``   ``param -> None``, raising ValueError for a parameter the rule cannot take
                      (Muon: 2-D only), when a param group is added.
    """

    name: str
    update: Callable[..., dict[str, Tensor]]
    init_state: Callable[[Tensor, Mapping[str, Any]], dict[str, Tensor]]
    hyperparams: Callable[[Mapping[str, Any]], dict[str, Any]]
    validate: Callable[[Mapping[str, Any]], None]
    counts_steps: bool = True
    scalar_state: tuple[str, ...] = field(default=())
    sparse_update: Callable[..., dict[str, Tensor]] | None = None
    sparse_only: bool = False
    complex_ok: bool = True
    int_step: bool = False
    check_param: Callable[[Tensor], None] | None = None


def validator(checks: Mapping[str, Callable[[str, Any], None]], optional: Mapping[str, Any] | None = None,
              also: Callable[[Mapping[str, Any]], None] | None = None) -> Callable[[Mapping[str, Any]], None]:
    """A group validator from ``{argument: check(name, value)}``.

    ``optional`` gives defaults for optimlab's own options, absent from a torch.optim group;
    ``also`` checks constraints between arguments.
    """
    optional = dict(optional or {})

    def validate(group: Mapping[str, Any]) -> None:
        for name, check in checks.items():
            check(name, group[name] if name in group else optional[name])
        if also is not None:
            also(group)

    return validate


def no_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {}


def zeros(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)


def filled(param: Tensor, value: Any) -> Tensor:
    """A state tensor like ``param`` holding ``value``: a number (a complex parameter's real and
    imaginary parts both get it, as in torch), or a tensor that broadcasts against ``param`` (the
    lab's engine initialises a batch of trajectories with one value per trajectory, ``(N, 1)``)."""
    if torch.is_tensor(value) and value.numel() > 1:
        return zeros(param) + value.to(param.dtype)
    value = float(value)
    return torch.full_like(param, complex(value, value) if param.is_complex() else value,
                           memory_format=torch.preserve_format)
