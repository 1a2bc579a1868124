"""Tracing a rule into an element-wise expression, with its scalars kept as run-time arguments.

An update rule is called once per group and step with *proxies* in place of its tensors. Python
evaluates everything that is a plain number (``lr / (1 - beta1 ** step)``, ``is_zero(momentum)``,
the branches on options) exactly as the eager path does; each operation that touches a tensor
is recorded as a node of a small expression DAG. Every Python number that meets a tensor becomes
a *scalar slot*: its value goes into ``Trace.scalars`` and only its position into the DAG's
structure, so a scheduler changing ``lr`` gives the same structure (same kernel) with new values.

The rule is not written again anywhere: the DAG is read off the one definition at each step.
Which operators and torch functions are recorded, and as which op, is read off the op table
(:mod:`.ops`). Anything the proxies do not model raises :class:`Unsupported`, and the caller falls
back to eager; an op the table lacks also warns, once per rule and op (:func:`trace_rule`).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Callable

import torch

from .ops import OPS


class Unsupported(Exception):
    """The rule did something the tracer does not model; run it eagerly instead.

    ``op`` names the element-wise op the fused paths lack, when that is the reason.
    """

    def __init__(self, message: str, op: str | None = None) -> None:
        super().__init__(message)
        self.op = op


LEAVES = ("in", "scalar", "dscalar")  # node kinds that are no op: a buffer's value, a scalar slot


class Trace:
    """An expression DAG: ``nodes[i]`` is ``(op, *args)`` with args node indices or slot numbers."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.nodes: list[tuple] = []
        self.scalars: list[Any] = []  # per slot: a float, or a 0-dim tensor on ``device``
        self._memo: dict[tuple, int] = {}
        self.device = device  # where device scalars may live (capturable steps); None: none may

    def node(self, *key: Any) -> "Vec":
        index = self._memo.get(key)
        if index is None:
            index = len(self.nodes)
            self.nodes.append(key)
            self._memo[key] = index
        return Vec(self, index)

    def scalar(self, value: Any) -> "Vec":
        """A slot for a number meeting a tensor: ``("scalar", slot)`` for a Python number, or
        ``("dscalar", slot)`` for a 0-dim tensor on the trace's device (computed there, no sync)."""
        if isinstance(value, torch.Tensor):
            if self.device is None or value.dim() != 0 or value.device != self.device:
                raise Unsupported("a real tensor met a traced one (tensor hyperparameters run eagerly)")
            kind = "dscalar"
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise Unsupported(f"operand of type {type(value).__name__}")
        else:
            kind, value = "scalar", float(value)
        self.scalars.append(value)
        self.nodes.append((kind, len(self.scalars) - 1))  # one node per slot, never shared
        return Vec(self, len(self.nodes) - 1)

    def input(self, slot: int) -> "Vec":
        return self.node("in", slot)

    def live(self, roots: Any) -> list[int]:
        """The nodes that ``roots`` depend on (themselves included), in evaluation order."""
        needed: set[int] = set()
        stack = list(roots)
        while stack:
            i = stack.pop()
            if i in needed:
                continue
            needed.add(i)
            if self.nodes[i][0] not in LEAVES:
                stack.extend(self.nodes[i][1:])
        return sorted(needed)


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
        return self.trace.scalar(other)

    def _binary(self, op: str, other: Any, reverse: bool = False) -> "Vec":
        o = self._operand(other)
        a, b = (o, self) if reverse else (self, o)
        return self.trace.node(op, a.index, b.index)

    def __rtruediv__(self, o):  # torch: ``number / tensor`` is ``tensor.reciprocal() * number``
        if isinstance(o, Vec):
            return o._binary("div", self)
        return self.trace.node("recip", self.index)._binary("mul", o)
    def __pos__(self): return self

    def clone(self, *args: Any, **kwargs: Any) -> "Vec":
        return self

    def __bool__(self) -> bool:
        raise Unsupported("a Python branch on a tensor value")

    def __getattr__(self, name: str) -> Any:  # ``x.exp()``: a tensor method no op of the table is
        raise Unsupported(f"tensor method {name}", op=name)

    def _compare(self, op: str) -> Any:
        raise Unsupported(f"comparison {op} of a tensor", op=op)

    def __lt__(self, o): return self._compare("lt")
    def __le__(self, o): return self._compare("le")
    def __gt__(self, o): return self._compare("gt")
    def __ge__(self, o): return self._compare("ge")

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
            name = getattr(func, "__name__", str(func))
            raise Unsupported(f"torch function {name}", op=name)
        return handler(*args, **kwargs)


def _apply(op: str, *operands: Any) -> Vec:
    """Record ``op`` on its operands: at least one a traced value, the others numbers (slots)."""
    first = next(x for x in operands if isinstance(x, Vec))
    args = [first._operand(x) for x in operands]
    return first.trace.node(op, *(a.index for a in args))


def _recorder(op: str, reflected: bool) -> Callable:
    if OPS[op].arity == 1:
        return lambda x, *args, **kwargs: _apply(op, x)
    if reflected:
        return lambda self, other: _apply(op, other, self)
    return lambda a, b: _apply(op, a, b)


for _op in OPS.values():
    for _dunder in _op.dunders:
        setattr(Vec, _dunder, _recorder(_op.name, reflected=_dunder.startswith("__r")))
    for _method in _op.functions:  # ``x.sqrt()`` as well as ``torch.sqrt(x)``
        setattr(Vec, _method, _recorder(_op.name, reflected=False))


def _zeros_like(x: Vec, *args: Any, **kwargs: Any) -> Vec:
    return x.trace.node("zero")


def _same(x: Vec, *args: Any, **kwargs: Any) -> Vec:
    return x


_TORCH_FUNCTIONS: dict[Any, Callable] = {
    torch.zeros_like: _zeros_like,
    torch.clone: _same, torch.Tensor.clone: _same,
}
for _op in OPS.values():
    for _name in _op.functions:
        for _namespace in (torch, torch.Tensor):
            _TORCH_FUNCTIONS[getattr(_namespace, _name)] = _recorder(_op.name, reflected=False)
    for _dunder in _op.dunders:  # a 0-dim device tensor on the left: ``step_size * m`` (capturable)
        _TORCH_FUNCTIONS[getattr(torch.Tensor, _dunder)] = _recorder(_op.name, reflected=_dunder.startswith("__r"))

_warned: set[tuple[str, str]] = set()


def _warn_missing_op(rule: str, op: str) -> None:
    if (rule, op) in _warned:
        return
    _warned.add((rule, op))
    warnings.warn(f"optimlab: the fused step has no op {op!r} (used by rule {rule!r}); "
                  f"rule {rule!r} runs eagerly", RuntimeWarning, stacklevel=5)


def trace_rule(update: Callable[..., dict[str, Any]], vector_inputs: list[str],
               arguments: dict[str, Any], name: str | None = None,
               device: torch.device | None = None) -> tuple[Trace, dict[str, Any]]:
    """Call ``update`` with a proxy for each name in ``vector_inputs`` (slot = its position).

    Returns the trace and the rule's output dict: proxies for tensor outputs, numbers for the
    scalar state it computes (Nadam's ``mu_product``). A rule (``name``, else the function's
    name) that uses an op the table lacks gets one RuntimeWarning per op, then Unsupported.
    With ``device``, 0-dim tensors there (a capturable step's counter and what the rule computes
    from it) become device-scalar slots instead of being refused.
    """
    trace = Trace(device)
    proxies = {name: trace.input(slot) for slot, name in enumerate(vector_inputs)}
    try:
        out = update(**proxies, **arguments)
    except Unsupported as error:
        if error.op is not None:
            _warn_missing_op(name or getattr(update, "__name__", str(update)), error.op)
        raise
    except Exception as error:  # a rule using something the proxies lack
        raise Unsupported(f"{type(error).__name__}: {error}") from error
    if not isinstance(out, dict):
        raise Unsupported("the rule did not return a dict")
    return trace, out
