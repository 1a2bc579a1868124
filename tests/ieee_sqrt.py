"""A correctly rounded ``torch.sqrt`` on CPU tensors, for comparing the eager rule with the kernels.

torch's CPU ``sqrt`` on float32 and float64 tensors calls Intel MKL's vector math (``vsSqrt`` /
``vdSqrt``, in torch's MKL builds), which is not correctly rounded: with torch 2.13.0+cpu on this
project's AMD EPYC machine, 11,040 of 65,536 float32 inputs (16.8%) come out one ulp off
``float32(sqrt(float64(x)))``, contiguous or strided, in one thread or two (float64: 766 of
65,536 off NumPy's), and calling ``vmsSqrt`` (any accuracy mode: LA, HA, EP) or ``vmdSqrt``
from torch's own library gives torch's output on every element. IEEE 754 asks for the correctly rounded square root; NumPy's (``sqrtps``), CUDA's
``sqrtf`` (torch's CUDA eager path) and the fused kernels' (the C ``sqrtf``, Triton's
``tl.sqrt_rn``, NumPy's in Triton's interpreter) are. Every other op of the rules (``+ - * /``,
a number times a tensor, ``maximum``) rounds the same in torch's CPU kernels as in NumPy.

So on CPU tensors the eager rule and a kernel differ in the last bit wherever a square root
does, and further on from there: a flipped stochastic bfloat16 rounding, a different 8-bit code,
amplified by a cancellation (RMSprop's momentum buffer). Inside :func:`correctly_rounded_sqrt`
the eager rule takes NumPy's square root, so the eager path computes what the kernels (and
torch's CUDA eager path) compute, and the two can be compared bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch


@contextlib.contextmanager
def correctly_rounded_sqrt() -> Iterator[None]:
    """``torch.sqrt(x)``, ``x.sqrt()`` and ``x.sqrt_()`` of a CPU float32 / float64 tensor that
    needs no gradient, and ``torch._foreach_sqrt`` / ``torch._foreach_sqrt_`` of lists of them
    (torch.optim's foreach paths), computed by NumPy (correctly rounded) while the block runs;
    anything else (a traced value, keyword arguments, another dtype or device, autograd) goes to
    torch's own."""
    real = (torch.sqrt, torch.Tensor.sqrt, torch.Tensor.sqrt_, torch._foreach_sqrt, torch._foreach_sqrt_)

    def ours(x: Any, args: tuple, kwargs: dict) -> bool:
        return not (args or kwargs or type(x) not in (torch.Tensor, torch.nn.Parameter) or x.device.type != "cpu"
                    or x.dtype not in (torch.float32, torch.float64)
                    or (x.requires_grad and torch.is_grad_enabled()))

    def numpy_sqrt(x: Any, *args: Any, **kwargs: Any) -> Any:
        if not ours(x, args, kwargs):
            return real[0](x, *args, **kwargs)
        a = x.detach().numpy()
        return torch.from_numpy(np.sqrt(a, out=np.empty_like(a)))

    def numpy_sqrt_(x: Any, *args: Any, **kwargs: Any) -> Any:
        if not ours(x, args, kwargs):
            return real[2](x, *args, **kwargs)
        a = x.detach().numpy()  # shares x's memory
        np.sqrt(a, out=a)
        return x

    def foreach_sqrt(xs: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not all(ours(x, (), {}) for x in xs):
            return real[3](xs, *args, **kwargs)
        return [numpy_sqrt(x) for x in xs]

    def foreach_sqrt_(xs: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not all(ours(x, (), {}) for x in xs):
            return real[4](xs, *args, **kwargs)
        for x in xs:
            numpy_sqrt_(x)

    torch.sqrt, torch.Tensor.sqrt, torch.Tensor.sqrt_ = numpy_sqrt, numpy_sqrt, numpy_sqrt_
    torch._foreach_sqrt, torch._foreach_sqrt_ = foreach_sqrt, foreach_sqrt_
    try:
        yield
    finally:
        torch.sqrt, torch.Tensor.sqrt, torch.Tensor.sqrt_, torch._foreach_sqrt, torch._foreach_sqrt_ = real
