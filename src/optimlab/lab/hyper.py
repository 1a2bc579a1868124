"""Hyperparameters for a batch of trajectories: what the lab's engine hands the update rule.

A number stays a number; a sequence or tensor becomes an ``(N, 1)`` column that broadcasts against
the ``(N, 2)`` parameter, so an LR or beta sweep is one batched run. Defaults, argument names and
validation come from the catalogue entry's drop-in class (its constructor's signature, checked by
the rule's ``validate``, as ``add_param_group`` does), so a lab trajectory is, number for number,
what ``optimlab.SGD`` / ``Adam`` / ... produce one trajectory at a time.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .. import catalogue, faults
from ..catalogue import Entry

HyperValue = float | Sequence[float] | Tensor


def _per_trajectory(name: str, value: HyperValue, n: int, dtype: torch.dtype,
                    device: torch.device | None = None) -> float | Tensor:
    """A float stays a float; a sequence / tensor becomes an ``(N, 1)`` column."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    t = torch.as_tensor(value, dtype=dtype, device=device).flatten()
    if t.numel() == 1:
        return float(t.item())
    if t.numel() != n:
        raise ValueError(f"{name} must be a number or have one value per trajectory ({n}), got {t.numel()} values")
    return t.reshape(n, 1)


#: optimizer arguments about execution, not the math: the lab's engine has no use for them
_NOT_IN_THE_LAB = {"params", "foreach", "fused", "differentiable", "capturable", *faults.options()}


def _group_for(spec: Entry, values: dict[str, Any]) -> dict[str, Any]:
    """The param group the optimizer class would build for scalar hyperparameter ``values``,
    validated by the rule's own ``validate`` (what ``add_param_group`` does).

    The defaults are read from the class's constructor signature rather than by building an
    instance: the first ``torch.optim.Optimizer`` built in a process imports ``torch._dynamo``
    (about 5 s), which the lab does not otherwise need.
    """
    kwargs = catalogue.constructor_kwargs(spec, values, options=spec.options)  # the lab's own options
    defaults = catalogue.signature_defaults(spec.spec)
    allowed = set(defaults) - _NOT_IN_THE_LAB
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        allowed = sorted(allowed)
        raise ValueError(f"{spec.name} has no hyperparameter {', '.join(map(repr, unknown))} (has: {', '.join(allowed)})")
    group = {**defaults, **kwargs, **spec.spec.fixed}
    spec.rule.validate(group)
    return group


def prepare(spec: Entry, n: int, lr: HyperValue, hyper: dict[str, HyperValue],
            dtype: torch.dtype, device: torch.device | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rule's keyword arguments for a batch of ``n`` (tensors ``(N, 1)`` where swept) and the
    param group (validated at the smallest and largest value of every swept hyperparameter)."""
    values = {"lr": _per_trajectory("lr", lr, n, dtype, device)}
    values.update({k: _per_trajectory(k, v, n, dtype, device) for k, v in hyper.items()})
    low = {k: (float(v.min()) if isinstance(v, Tensor) else v) for k, v in values.items()}
    high = {k: (float(v.max()) if isinstance(v, Tensor) else v) for k, v in values.items()}
    group = _group_for(spec, low)
    if high != low:
        _group_for(spec, high)
    kwargs = spec.rule.hyperparams(group)
    for key, value in values.items():
        if key not in kwargs:
            raise ValueError(f"{spec.name} has no hyperparameter {key!r} (has: {', '.join(sorted(kwargs))})")
        kwargs[key] = value
    if spec.lookahead and isinstance(kwargs.get("momentum"), float) and kwargs["momentum"] == 0:
        raise ValueError("nag needs momentum > 0")
    return kwargs, group
