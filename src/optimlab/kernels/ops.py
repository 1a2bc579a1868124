"""The op table of the fused paths: each element-wise op's tracing and its code, side by side.

One row per op: how a rule reaches it (the dunder methods and torch functions that :mod:`.trace`
records as this op), its C expression (:mod:`.cpu`), its Triton expression (:mod:`.triton`) and
its meaning over lists of tensors (``torch._foreach_*``, :mod:`.foreach`). An op missing here is
an op the fused paths lack: the tracer reports it by name and the step runs eagerly.

Expression templates take the operands as ``{a}``, ``{b}``. C templates name the element type
``T`` (a typedef of the kernel) and see ``{f}`` (``"f"`` for float's math functions, ``""`` for double's); Triton
templates see ``{div}`` and ``{sqrt}``, the correctly rounded division and square root of the
compute type (``tl.div_rn`` / ``tl.sqrt_rn`` in float32), ``{zeros}`` and ``{ones}``, blocks of
zeros and ones (``CT`` names the compute type). ``clamp`` and ``ones_like`` are traced as
``max``/``min`` and ``one`` (:mod:`.trace`).

Every expression rounds as torch's eager kernel of the same op does (IEEE operations, no
contraction into fused multiply-adds); ``max`` and ``min`` propagate NaN as ``torch.maximum``
and ``torch.minimum`` do, and ``sign`` maps NaN and both zeros to ``+0`` as ``torch.sign`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

Operand = Any  # a list of tensors (one per parameter) or a Python float / 0-dim tensor


@dataclass(frozen=True)
class Op:
    """One element-wise op: how it is traced, and its C, Triton and foreach forms."""

    name: str
    arity: int
    c: str
    triton: str
    foreach: Callable[..., list]
    dunders: tuple[str, ...] = ()  # Python operators recorded as this op (reflected ones swap operands)
    functions: tuple[str, ...] = ()  # names in ``torch`` and on ``torch.Tensor`` recorded as this op

    def emit_c(self, args: list[str], ctype: str) -> str:
        names = dict(zip("abc", args))
        return self.c.format(f="f" if ctype == "float" else "", **names)

    def emit_triton(self, args: list[str], helpers: dict[str, str]) -> str:
        return self.triton.format(**helpers, **dict(zip("abc", args)))


def _commutative(foreach_op: Callable) -> Callable[[Operand, Operand], list]:
    """A binary foreach op whose list may come second (``2 * x``): operands swap exactly."""
    def run(a: Operand, b: Operand) -> list:
        return foreach_op(a, b) if isinstance(a, (list, tuple)) else foreach_op(b, a)
    return run


def _sub(a: Operand, b: Operand) -> list:
    if isinstance(a, (list, tuple)):
        return torch._foreach_sub(a, b)
    return torch._foreach_add(torch._foreach_neg(b), a)  # s - t == (-t) + s exactly (IEEE)


def _div(a: Operand, b: Operand) -> list:
    if isinstance(a, (list, tuple)):
        return torch._foreach_div(a, b)
    return [torch.div(a, t) for t in b]


def _compare(fn: Callable, flipped: Callable) -> Callable[[Operand, Operand], list]:
    """A comparison over lists: bool tensors, as torch's (the kernels hold the mask as 0 / 1);
    ``flipped`` is the same comparison with its operands swapped (``0 < x`` is ``x > 0``)."""
    def run(a: Operand, b: Operand) -> list:
        if not isinstance(a, (list, tuple)):
            return [flipped(t, a) for t in b]
        return [fn(t, _at(b, i)) for i, t in enumerate(a)]
    return run


def _at(x: Operand, i: int) -> Any:
    return x[i] if isinstance(x, (list, tuple)) else x


def _where(c: list, a: Operand, b: Operand) -> list:
    return [torch.where(c[i], _at(a, i), _at(b, i)) for i in range(len(c))]


def _max_c(compare: str) -> str:
    return ("(({a} != {a}) || ({b} != {b}) ? ({a} + {b}) : "
            "({a} " + compare + " {b} ? {a} : {b}))")


def _max_triton(compare: str) -> str:  # a NaN operand is the result (either may be a scalar)
    return "tl.where({a} != {a}, {a}, tl.where({b} != {b}, {b}, tl.where({a} " + compare + " {b}, {a}, {b})))"


OPS: dict[str, Op] = {op.name: op for op in [
    Op("add", 2, "({a} + {b})", "({a} + {b})", _commutative(torch._foreach_add), ("__add__", "__radd__"), ("add",)),
    Op("sub", 2, "({a} - {b})", "({a} - {b})", _sub, ("__sub__", "__rsub__"), ("sub",)),
    Op("mul", 2, "({a} * {b})", "({a} * {b})", _commutative(torch._foreach_mul), ("__mul__", "__rmul__"), ("mul",)),
    Op("div", 2, "({a} / {b})", "{div}({a}, {b})", _div, ("__truediv__",), ("div",)),
    Op("max", 2, _max_c(">"), _max_triton(">"), _commutative(torch._foreach_maximum),
       functions=("maximum",)),
    Op("min", 2, _max_c("<"), _max_triton("<"), _commutative(torch._foreach_minimum),
       functions=("minimum",)),
    Op("neg", 1, "(-{a})", "(-{a})", torch._foreach_neg, ("__neg__",), ("neg",)),
    Op("recip", 1, "((T)1 / {a})", "{div}({ones}, {a})", torch._foreach_reciprocal, functions=("reciprocal",)),
    Op("sqrt", 1, "sqrt{f}({a})", "{sqrt}({a})", torch._foreach_sqrt, functions=("sqrt",)),
    Op("abs", 1, "fabs{f}({a})", "tl.abs({a})", torch._foreach_abs, ("__abs__",), ("abs",)),
    Op("sign", 1, "((T)(({a} > 0) - ({a} < 0)))", "(({a} > 0).to({a}.dtype) - ({a} < 0).to({a}.dtype))",
       torch._foreach_sign, functions=("sign",)),
    Op("zero", 0, "(T)0", "{zeros}", lambda like: [torch.zeros_like(t) for t in like]),
    Op("one", 0, "(T)1", "{ones}", lambda like: [torch.ones_like(t) for t in like]),
    # comparisons give a mask (torch: bool; the kernels: 0 or 1 in the compute type) for ``where``
    Op("gt", 2, "((T)({a} > {b}))", "({a} > {b}).to(CT)", _compare(torch.gt, torch.lt), ("__gt__",), ("gt",)),
    Op("lt", 2, "((T)({a} < {b}))", "({a} < {b}).to(CT)", _compare(torch.lt, torch.gt), ("__lt__",), ("lt",)),
    Op("ge", 2, "((T)({a} >= {b}))", "({a} >= {b}).to(CT)", _compare(torch.ge, torch.le), ("__ge__",), ("ge",)),
    Op("le", 2, "((T)({a} <= {b}))", "({a} <= {b}).to(CT)", _compare(torch.le, torch.ge), ("__le__",), ("le",)),
    Op("where", 3, "({a} != 0 ? {b} : {c})", "tl.where({a} != 0, {b}, {c})", _where, functions=("where",)),
]}
