"""``opt.step()`` inside ``torch.compile``: the whole update as one custom operator.

Under ``torch.compile`` the step is not traced: ``Optimizer.step`` calls :func:`step`, which
puts one call of the custom operator ``optimlab::step`` (registered with ``torch.library``) in
the graph, with the parameters that have gradients (declared mutated) and their gradients. When
the compiled code runs, the operator runs the ordinary step - the fused kernels and the eager
rule, the plan, the checks, the learning rates as the param groups hold them then - so a
scheduler changing ``lr`` recompiles nothing, and the optimizer's state (which the graph never
sees) stays out of the graph. Compiled and eager steps give the same numbers.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import torch
from torch import Tensor

__all__ = ["register", "step"]

_optimizers: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
_handles = itertools.count()


def register(optimizer: Any) -> None:
    """Give ``optimizer`` the number the compiled graph names it by (from ``__init__`` and
    ``__setstate__``: a copy gets its own number, a reloaded state keeps it)."""
    handle = getattr(optimizer, "_optimlab_handle", None)
    if handle is None or _optimizers.get(handle) is not optimizer:
        optimizer._optimlab_handle = handle = next(_handles)
        _optimizers[handle] = optimizer
    # the groups under another name: dynamo guards every value of ``param_groups`` (each lr) when
    # traced code reads that attribute of an optimizer, and would recompile whenever an lr changes
    optimizer._optimlab_groups = optimizer.param_groups


def _with_grads(groups: list[dict[str, Any]]) -> list[Tensor]:
    return [p for group in groups for p in group["params"] if p.grad is not None]


def step(optimizer: Any) -> None:
    """What a compiled ``opt.step()`` records: one ``optimlab::step`` call."""
    params = _with_grads(optimizer._optimlab_groups)
    _step(params, [p.grad for p in params], optimizer._optimlab_handle)


@torch.library.custom_op("optimlab::step", mutates_args=("params",))
def _step(params: list[Tensor], grads: list[Tensor], handle: int) -> None:
    """Run the optimizer's ordinary (uncompiled) update on its parameters.

    The graph may hand over copies of the parameters (functionalization): then the step runs on
    the optimizer's own parameters, and the copies receive the result.
    """
    optimizer = _optimizers.get(handle)
    if optimizer is None:
        raise RuntimeError(f"optimlab::step: optimizer {handle} no longer exists")
    if optimizer._optimlab_groups is not optimizer.param_groups:
        raise RuntimeError("optimlab::step: param_groups was replaced by another list; "
                           "add groups with add_param_group or load_state_dict")
    own = _with_grads(optimizer.param_groups)
    if len(own) != len(params):
        raise RuntimeError(f"optimlab::step: the graph passed {len(params)} parameters with gradients, "
                           f"the optimizer has {len(own)}")
    copies = [(p, q) for p, q in zip(own, params) if p is not q]
    with torch.no_grad():
        for p, q in copies:
            p.copy_(q)
        optimizer._update()
        for p, q in copies:
            q.copy_(p)


@_step.register_fake
def _(params: list[Tensor], grads: list[Tensor], handle: int) -> None:
    return None
