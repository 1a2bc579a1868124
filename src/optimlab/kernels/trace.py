"""Tracing a rule into an element-wise expression, with its scalars kept as run-time arguments.

An update rule is called once per group and step with *proxies* in place of its tensors. Python
evaluates everything that is a plain number (``lr / (1 - beta1 ** step)``, ``is_zero(momentum)``,
the branches on options) exactly as the eager path does; each operation that touches a tensor
is recorded as a node of a small expression DAG. Every Python number that meets a tensor becomes
a *scalar slot*: its value goes into ``Trace.scalars`` and only its position into the DAG's
structure, so a scheduler changing ``lr`` gives the same structure (same kernel) with new values.

The rule is not written again anywhere: the DAG is read off the one definition at each step.
Anything the proxies do not model raises :class:`Unsupported`, and the caller falls back to eager.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import torch


class Unsupported(Exception):
    """The rule did something the tracer does not model; run it eagerly instead."""


class Trace:
    """An expression DAG: ``nodes[i]`` is ``(op, *args)`` with args node indices or slot numbers."""

    def __init__(self) -> None:
        self.nodes: list[tuple] = []
        self.scalars: list[float] = []
        self._memo: dict[tuple, int] = {}

    def node(self, *key: Any) -> "Vec":
        index = self._memo.get(key)
        if index is None:
            index = len(self.nodes)
            self.nodes.append(key)
            self._memo[key] = index
        return Vec(self, index)

    def scalar(self, value: Any) -> "Vec":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise Unsupported(f"operand of type {type(value).__name__}")
        self.scalars.append(float(value))
        self.nodes.append(("scalar", len(self.scalars) - 1))  # one node per slot, never shared
        return Vec(self, len(self.nodes) - 1)

    def input(self, slot: int) -> "Vec":
        return self.node("in", slot)


class Vec:
    """A proxy for an element-wise tensor value inside a trace."""

    __slots__ = ("trace", "index")

    def __init__(self, trace: Trace, index: int) -> None:
        self.trace = trace
        self.index = index

    # -- operands ---------------------------------------------------------------------------
    def _operand(self, other: Any) -> "Vec":
        if isinstance(other, Vec):
            if other.trace is not self.trace:
                raise Unsupported("operands from two traces")
            return other
        if isinstance(other, torch.Tensor):
            raise Unsupported("a real tensor met a traced one (tensor hyperparameters run eagerly)")
        return self.trace.scalar(other)

    def _binary(self, op: str, other: Any, reverse: bool = False) -> "Vec":
        o = self._operand(other)
        a, b = (o, self) if reverse else (self, o)
        return self.trace.node(op, a.index, b.index)

    def __add__(self, o): return self._binary("add", o)
    def __radd__(self, o): return self._binary("add", o, reverse=True)
    def __sub__(self, o): return self._binary("sub", o)
    def __rsub__(self, o): return self._binary("sub", o, reverse=True)
    def __mul__(self, o): return self._binary("mul", o)
    def __rmul__(self, o): return self._binary("mul", o, reverse=True)
    def __truediv__(self, o): return self._binary("div", o)
    def __rtruediv__(self, o):  # torch: ``number / tensor`` is ``tensor.reciprocal() * number``
        if isinstance(o, Vec):
            return o._binary("div", self)
        return self.trace.node("recip", self.index)._binary("mul", o)
    def __neg__(self): return self.trace.node("neg", self.index)
    def __pos__(self): return self

    def clone(self, *args: Any, **kwargs: Any) -> "Vec":
        return self

    def __bool__(self) -> bool:
        raise Unsupported("a Python branch on a tensor value")

    def __pow__(self, exponent: Any) -> "Vec":
        if not isinstance(exponent, Vec) and exponent == 2:
            return self * self
        if not isinstance(exponent, Vec) and exponent == 0.5:
            return self.trace.node("sqrt", self.index)
        raise Unsupported("tensor ** non-constant")

    # -- torch functions ----------------------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None):
        kwargs = kwargs or {}
        handler = _TORCH_FUNCTIONS.get(func)
        if handler is None:
            raise Unsupported(f"torch function {getattr(func, '__name__', func)}")
        return handler(*args, **kwargs)


def _zeros_like(x: Vec, *args: Any, **kwargs: Any) -> Vec:
    return x.trace.node("zero")


def _maximum(a: Any, b: Any) -> Vec:
    if isinstance(a, Vec):
        return a._binary("max", b)
    return b._binary("max", a, reverse=True)


def _sqrt(x: Vec) -> Vec:
    return x.trace.node("sqrt", x.index)


_TORCH_FUNCTIONS: dict[Any, Callable] = {
    torch.sqrt: _sqrt, torch.Tensor.sqrt: _sqrt,
    torch.maximum: _maximum, torch.Tensor.maximum: _maximum,
    torch.zeros_like: _zeros_like,
    torch.clone: lambda x, *a, **k: x, torch.Tensor.clone: lambda x, *a, **k: x,
    torch.neg: Vec.__neg__, torch.Tensor.neg: Vec.__neg__,
}


def trace_rule(update: Callable[..., dict[str, Any]], vector_inputs: list[str],
               arguments: dict[str, Any]) -> tuple[Trace, dict[str, Any]]:
    """Call ``update`` with a proxy for each name in ``vector_inputs`` (slot = its position).

    Returns the trace and the rule's output dict: proxies for tensor outputs, numbers for the
    scalar state it computes (Nadam's ``mu_product``).
    """
    trace = Trace()
    proxies = {name: trace.input(slot) for slot, name in enumerate(vector_inputs)}
    try:
        out = update(**proxies, **arguments)
    except Unsupported:
        raise
    except Exception as error:  # a rule using something the proxies lack
        raise Unsupported(f"{type(error).__name__}: {error}") from error
    if not isinstance(out, dict):
        raise Unsupported("the rule did not return a dict")
    return trace, out
