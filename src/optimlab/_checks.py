"""Validation of hyperparameters: every error names the argument and the allowed range.

Checks run when an optimizer (or a param group) is built, and again at the start of each step
before any parameter is touched, so a bad value never leaves a half-updated model.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch


def _as_real(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a 1-element tensor, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a real number, got nan")
    return value


def check_range(name: str, value: Any, low: float, high: float = math.inf, *,
                low_open: bool = False, high_open: bool = True) -> None:
    """Raise unless ``value`` lies in the interval low..high (``[`` or ``(`` per the flags)."""
    v = _as_real(name, value)
    too_low = v <= low if low_open else v < low
    too_high = (v >= high if high_open else v > high) if high != math.inf else v == math.inf
    if too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open or high == math.inf else "]"
        hi_txt = "inf" if high == math.inf else f"{high:g}"
        raise ValueError(f"{name} must be in {lo}{low:g}, {hi_txt}{hi}, got {value!r}")


def check_real(name: str, value: Any) -> None:
    """Any real number, infinities included (a threshold: inf always met, -inf never), not NaN."""
    _as_real(name, value)


def check_nonnegative(name: str, value: Any) -> None:
    check_range(name, value, 0.0)


def check_positive(name: str, value: Any) -> None:
    check_range(name, value, 0.0, low_open=True)


def check_unit(name: str, value: Any) -> None:
    """A decay factor: in [0, 1)."""
    check_range(name, value, 0.0, 1.0)


def check_betas(name: str, value: Any) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), each in [0, 1), got {value!r}")
    check_unit(f"{name}[0]", value[0])
    check_unit(f"{name}[1]", value[1])


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def one_of(*choices: str):
    """A check accepting only ``choices``."""
    return lambda name, value: check_choice(name, value, choices)
