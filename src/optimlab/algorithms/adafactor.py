"""Adafactor (Shazeer & Stern, 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory
Cost"), as torch.optim.Adafactor::

    b2_t  = 1 - t ** beta2_decay                     increasing decay (beta2_decay = -0.8)
    rho_t = min(lr, 1 / sqrt(t))                     relative step size
    a_t   = max(eps2, RMS(w)) * rho_t                step scaled by the parameter's own size
    w     = w * (1 - lr * wd)                        decoupled weight decay
    for a matrix (the last two axes):                factored second moment
        R = b2_t * R + (1 - b2_t) * mean_cols(g*g)   row factor ("row_var", shape [..., n, 1])
        C = b2_t * C + (1 - b2_t) * mean_rows(g*g)   column factor ("col_var", shape [..., 1, m])
        V = R @ C / max(mean(R), eps1)               rank-1 estimate of the second moment
    for a vector:
        V = b2_t * V + (1 - b2_t) * g*g              ("variance")
    U = g / sqrt(max(V, eps1**2))
    w = w - a_t / max(1, RMS(U) / d) * U             update clipping at threshold d

``eps1 = None`` means the machine epsilon of the parameter's dtype. The row and column
reductions and the matrix product are not element-wise: the whole rule runs eagerly (the fused
path takes no part of it).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_bool, check_nonnegative, check_range
from ._base import Number, Rule, decoupled_decay, validator, zeros


def _mean_square(g: Tensor, dim: int) -> Tensor:
    """mean(g * g) along ``dim`` (kept), as a squared norm so no g-sized temporary is made."""
    return torch.linalg.vector_norm(g, dim=dim, keepdim=True).square() / g.size(dim)


def _rms(t: Tensor) -> float:
    return torch.linalg.vector_norm(t).item() / t.numel() ** 0.5


def adafactor(param: Tensor, grad: Tensor, row_var: Tensor | None = None, col_var: Tensor | None = None,
              variance: Tensor | None = None, *, step: Number, lr: Number = 1e-2, beta2_decay: Number = -0.8,
              eps1: Number | None = None, eps2: Number = 1e-3, d: Number = 1.0, weight_decay: Number = 0.0,
              maximize: bool = False) -> dict[str, Tensor]:
    """One Adafactor step; see the module docstring."""
    g = -grad if maximize else grad
    if eps1 is None:
        eps1 = torch.finfo(param.dtype).eps
    weight = step ** beta2_decay  # 1 - b2_t: the EWMA's weight on the new value
    rho = min(lr, 1 / step ** 0.5)
    alpha = max(eps2, _rms(param)) * rho
    param = decoupled_decay(param, lr, weight_decay)
    out: dict[str, Tensor] = {}
    if g.dim() > 1:
        rows = torch.lerp(row_var, _mean_square(g, -1), weight)
        cols = torch.lerp(col_var, _mean_square(g, -2), weight)
        estimate = (rows @ cols) / rows.mean(dim=-2, keepdim=True).clamp(min=eps1)
        out |= {"row_var": rows, "col_var": cols}
    else:
        estimate = torch.lerp(variance, g * g, weight)
        out["variance"] = estimate
    update = torch.rsqrt(estimate.clamp(min=eps1 * eps1)) * g
    clip = max(1.0, _rms(update) / d)
    out["param"] = param - (alpha / clip) * update
    return out


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    if param.dim() > 1:
        return {"row_var": param.new_zeros((*param.shape[:-1], 1)),
                "col_var": param.new_zeros((*param.shape[:-2], 1, param.shape[-1]))}
    return {"variance": zeros(param)}


def _check_eps(name: str, value: Any) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (eps1 or None, eps2), got {value!r}")
    if value[0] is not None:
        check_nonnegative(f"{name}[0]", value[0])
    check_nonnegative(f"{name}[1]", value[1])


validate = validator({"lr": check_nonnegative,
                      "beta2_decay": lambda name, value: check_range(name, value, -float("inf"), 0.0, high_open=False),
                      "eps": _check_eps, "d": lambda name, value: check_range(name, value, 1.0),
                      "weight_decay": check_nonnegative, "maximize": check_bool})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    eps1, eps2 = group["eps"]
    return {"lr": group["lr"], "beta2_decay": group["beta2_decay"], "eps1": eps1, "eps2": eps2, "d": group["d"],
            "weight_decay": group["weight_decay"], "maximize": group["maximize"]}


RULE = Rule("adafactor", adafactor, init_state, hyperparams, validate, complex_ok=False)
