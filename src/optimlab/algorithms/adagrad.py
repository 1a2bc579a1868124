"""AdaGrad (Duchi, Hazan & Singer, 2011): a per-parameter step that shrinks with the sum of squares::

    lr_t = lr / (1 + (t - 1) * lr_decay)
    V    = V + g * g                           V0 = initial_accumulator_value
    w    = w - lr_t * g / (sqrt(V) + eps)      torch.optim.Adagrad (default)
    w    = w - lr_t * g / sqrt(V + eps)        eps_inside_sqrt=True (the seed's form)

``V`` never decreases, so the effective step ``lr_t / sqrt(V)`` vanishes over a long run.

A sparse gradient (``nn.Embedding(sparse=True)``) updates only the rows it names: the same
formulas applied at the gradient's (coalesced) indices, as torch.optim.Adagrad does; weight decay
is not defined there (it would touch every row) and raises, as in torch.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_bool, check_nonnegative, check_positive
from ._base import Number, Rule, descent_direction, filled, is_zero, validator


def adagrad(param: Tensor, grad: Tensor, sum: Tensor, *, step: Number, lr: Number,
            lr_decay: Number = 0.0, weight_decay: Number = 0.0, eps: Number = 1e-10,
            maximize: bool = False, eps_inside_sqrt: bool = False) -> dict[str, Tensor]:
    """One AdaGrad step; ``sum`` is the accumulator V (torch's state name)."""
    g = descent_direction(param, grad, weight_decay, maximize)
    clr = lr / (1 + (step - 1) * lr_decay)
    acc = sum + g * g
    std = torch.sqrt(acc + eps) if eps_inside_sqrt else torch.sqrt(acc) + eps
    return {"param": param - clr * (g / std), "sum": acc}


def adagrad_sparse(param: Tensor, grad: Tensor, sum: Tensor, *, step: Number, lr: Number,
                   lr_decay: Number = 0.0, weight_decay: Number = 0.0, eps: Number = 1e-10,
                   maximize: bool = False, eps_inside_sqrt: bool = False) -> dict[str, Tensor]:
    """One AdaGrad step for a sparse COO ``grad``: the rows it names move, the others stay."""
    if not is_zero(weight_decay):
        raise RuntimeError("weight_decay option is not compatible with sparse gradients (allowed: 0)")
    g = (-grad if maximize else grad).coalesce()  # the update is non-linear: indices must be unique
    clr = lr / (1 + (step - 1) * lr_decay)
    indices, values = g._indices(), g._values()
    acc = sum + torch.sparse_coo_tensor(indices, values * values, g.size(), check_invariants=False)
    acc_at = acc.sparse_mask(g)._values()
    std = torch.sqrt(acc_at + eps) if eps_inside_sqrt else torch.sqrt(acc_at) + eps
    step_rows = torch.sparse_coo_tensor(indices, values / std, g.size(), check_invariants=False)
    return {"param": param.add(step_rows, alpha=-clr), "sum": acc}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"sum": filled(param, group["initial_accumulator_value"])}


validate = validator(
    {"lr": check_nonnegative, "lr_decay": check_nonnegative, "weight_decay": check_nonnegative,
     "initial_accumulator_value": check_nonnegative, "eps": check_positive, "maximize": check_bool,
     "eps_inside_sqrt": check_bool},
    optional={"eps_inside_sqrt": False})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in ("lr", "lr_decay", "weight_decay", "eps", "maximize")} | {
        "eps_inside_sqrt": group.get("eps_inside_sqrt", False)}


RULE = Rule("adagrad", adagrad, init_state, hyperparams, validate, sparse_update=adagrad_sparse)
