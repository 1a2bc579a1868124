"""SparseAdam: Adam (Kingma & Ba, 2015) applied only at the rows a sparse gradient names, as
torch.optim.SparseAdam (for ``nn.Embedding(sparse=True)``)::

    at the gradient's (coalesced) indices only:
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    w = w - lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + eps)

Rows the gradient does not name keep their parameters and moments (a lazy Adam). The rule returns
each change as a sparse increment at the named rows, so a step costs O(rows), not O(parameter). The step count
is per parameter and advances even when the gradient names no row. Dense gradients are refused.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_betas, check_bool, check_positive
from ._base import Number, Rule, validator, zeros


def sparse_adam(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *, step: Number, lr: Number,
                beta1: Number = 0.9, beta2: Number = 0.999, eps: Number = 1e-8,
                maximize: bool = False) -> dict[str, Tensor]:
    """One SparseAdam step for a sparse COO ``grad``; see the module docstring."""
    g = (-grad if maximize else grad).coalesce()  # the update is non-linear: indices must be unique
    indices, values = g._indices(), g._values()
    if values.numel() == 0:
        return {"param": param, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}

    def rows(v: Tensor) -> Tensor:
        return torch.sparse_coo_tensor(indices, v, g.size(), check_invariants=False)

    m_old, v_old = exp_avg.sparse_mask(g)._values(), exp_avg_sq.sparse_mask(g)._values()
    m_change = (values - m_old) * (1 - beta1)          # the EWMA as an increment, at the named rows
    v_change = (values * values - v_old) * (1 - beta2)
    m_new, v_new = m_change + m_old, v_change + v_old
    step_size = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    update = -step_size * (m_new / (torch.sqrt(v_new) + eps))
    # sparse increments (see Rule.sparse_update): the optimizer adds them in place at the named rows
    return {"param": rows(update), "exp_avg": rows(m_change), "exp_avg_sq": rows(v_change)}


def dense_refused(param: Tensor, grad: Tensor, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
    raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam instead")


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"exp_avg": zeros(param), "exp_avg_sq": zeros(param)}


validate = validator({"lr": check_positive, "betas": check_betas, "eps": check_positive, "maximize": check_bool})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    beta1, beta2 = group["betas"]
    return {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "eps": group["eps"],
            "maximize": group.get("maximize", False)}


def check_param(param: Tensor) -> None:
    if param.is_sparse:
        raise ValueError("SparseAdam requires dense parameter tensors (sparse gradients, dense parameters)")
    if param.is_complex():
        raise ValueError("SparseAdam does not support complex parameters (allowed: real dtypes)")


RULE = Rule("sparseadam", dense_refused, init_state, hyperparams, validate, sparse_update=sparse_adam,
            sparse_only=True, complex_ok=False, int_step=True, check_param=check_param)
