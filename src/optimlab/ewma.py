"""The exponentially weighted moving average, with optional bias correction.

The seed's ``V_t = beta * V_{t-1} + (1 - beta) * theta_t`` with ``V_0 = 0``. Because ``V_0 = 0``
the early averages are pulled towards zero; dividing by ``1 - beta**t`` removes that bias
(Kingma & Ba, 2015, section 3), which is what Adam's bias correction is.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from ._checks import check_bool, check_unit
from .algorithms._base import ewma

Value = float | Tensor


class EWMA:
    """A running EWMA of a stream of floats or tensors (of one shape).

    >>> avg = EWMA(beta=0.9)
    >>> avg.update(10.0)   # bias-corrected: 10.0 (the raw average is 1.0)
    10.0
    """

    def __init__(self, beta: float = 0.9, bias_correction: bool = True) -> None:
        check_unit("beta", beta)
        check_bool("bias_correction", bias_correction)
        self.beta = float(beta)
        self.bias_correction = bias_correction
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.raw: Value = 0.0

    def update(self, value: Value) -> Value:
        """Fold ``value`` into the average and return the (possibly corrected) average."""
        if isinstance(value, Tensor):
            value = value.detach()
            if not (value.is_floating_point() or value.is_complex()):
                value = value.to(torch.get_default_dtype())
            if isinstance(self.raw, Tensor) and self.raw.shape != value.shape:
                raise ValueError(f"value must have shape {tuple(self.raw.shape)} like the earlier values, "
                                 f"got {tuple(value.shape)}")
            previous = self.raw if isinstance(self.raw, Tensor) else torch.zeros_like(value)
        else:
            if isinstance(self.raw, Tensor):
                raise TypeError("value must be a tensor like the earlier values, got a number")
            value = float(value)
            previous = self.raw
        self.raw = ewma(previous, value, self.beta)
        self.count += 1
        return self.value

    __call__ = update

    @property
    def value(self) -> Value:
        """The current average: ``V_t / (1 - beta**t)`` with bias correction, else ``V_t``."""
        if self.count == 0:
            raise ValueError("the EWMA has no value before the first update")
        if not self.bias_correction:
            return self.raw
        return self.raw / (1 - self.beta ** self.count)


def ewma_series(values: Iterable[float] | Tensor, beta: float = 0.9, bias_correction: bool = True) -> Tensor:
    """The EWMA of a whole 1-D series, as a tensor of the same length (float64 for number lists)."""
    data = values if isinstance(values, Tensor) else torch.tensor(list(values), dtype=torch.float64)
    if data.dim() != 1:
        raise ValueError(f"values must be a 1-D series, got shape {tuple(data.shape)}")
    avg = EWMA(beta, bias_correction)
    return torch.stack([torch.as_tensor(avg.update(x)) for x in data]) if len(data) else data.clone()
