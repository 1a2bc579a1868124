"""Muon (Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural networks"; the
learning-rate adjustments of Liu et al., 2025, "Muon is Scalable for LLM Training"), as
torch.optim.Muon, for 2-D parameters::

    B = mu * B + (1 - mu) * g                        momentum ("momentum_buffer")
    M = g + mu * (B - g)                             nesterov=True;  M = B otherwise
    O = NS_k(M)                                      Newton-Schulz orthogonalisation (below)
    w = w * (1 - lr * wd) - lr' * O                  lr' = lr * sqrt(max(1, rows / cols))  ("original")
                                                     lr' = lr * 0.2 * sqrt(max(rows, cols)) ("match_rms_adamw")

NS_k runs k steps of the quintic iteration ``X <- a X + (b A + c A A) X`` with ``A = X X^T``,
from ``X = M / max(||M||_F, eps)`` (transposed so that it is wide), which drives the singular
values of ``M`` towards 1: ``O`` is approximately ``U V^T`` for ``M = U S V^T``. torch runs it in
bfloat16; ``ns_dtype`` (optimlab's option) picks another dtype. Matrix products are not
element-wise: the whole rule runs eagerly (the fused path takes no part of it).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from .._checks import check_nonnegative, one_of
from ._base import Number, Rule, validator, zeros

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
ADJUST_LR = (None, "original", "match_rms_adamw")


def newton_schulz(m: Tensor, coefficients: tuple[float, float, float] = NS_COEFFICIENTS, steps: int = 5,
                  eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """``steps`` quintic Newton-Schulz iterations towards the orthogonal factor of the 2-D ``m``."""
    if steps >= 100:
        raise ValueError(f"ns_steps must be below 100, got {steps}")
    if m.dim() != 2:
        raise ValueError(f"Muon orthogonalises 2-D matrices, got a tensor of shape {tuple(m.shape)}")
    if len(coefficients) != 3:
        raise ValueError(f"ns_coefficients must be three numbers (a, b, c), got {coefficients!r}")
    a, b, c = coefficients
    tall = m.size(0) > m.size(1)
    x = m.to(dtype)
    x = x.T if tall else x
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A A
        x = torch.addmm(x, poly, x, beta=a)                   # a X + (b A + c A A) X
    return x.T if tall else x


def adjusted_lr(lr: Number, adjust_lr_fn: str | None, shape: torch.Size) -> Number:
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1, rows / cols))


def muon(param: Tensor, grad: Tensor, momentum_buffer: Tensor, *, lr: Number = 1e-3, weight_decay: Number = 0.1,
         momentum: Number = 0.95, nesterov: bool = True,
         ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = 1e-7, ns_steps: int = 5,
         adjust_lr_fn: str | None = None, ns_dtype: torch.dtype = torch.bfloat16) -> dict[str, Tensor]:
    """One Muon step; see the module docstring."""
    buf = torch.lerp(momentum_buffer, grad, 1 - momentum)
    direction = torch.lerp(grad, buf, momentum) if nesterov else buf
    ortho = newton_schulz(direction, ns_coefficients, ns_steps, eps, ns_dtype).to(param.dtype)
    step = adjusted_lr(lr, adjust_lr_fn, param.shape)
    return {"param": param * (1 - lr * weight_decay) - step * ortho, "momentum_buffer": buf}


def init_state(param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
    return {"momentum_buffer": zeros(param)}


validate = validator({"lr": check_nonnegative, "momentum": check_nonnegative, "weight_decay": check_nonnegative,
                      "adjust_lr_fn": one_of(*ADJUST_LR)})


def hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    names = ("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps", "adjust_lr_fn")
    return {k: group[k] for k in names} | {"ns_dtype": group.get("ns_dtype") or torch.bfloat16}


def check_param(param: Tensor) -> None:
    if param.ndim != 2:
        raise ValueError(f"Muon only supports 2D parameters (allowed: a matrix), got one of shape {tuple(param.shape)}")


RULE = Rule("muon", muon, init_state, hyperparams, validate, counts_steps=False, complex_ok=False,
            check_param=check_param)
