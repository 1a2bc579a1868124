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

import math
import numbers
import operator
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


LEAVES = ("in", "scalar", "dscalar", "dconst")  # node kinds that are no op: a buffer's value, a scalar slot

# A capturable step's arithmetic on its device counters (``1 - beta1 ** step``), recorded as nodes
# of the same trace and computed in float64 inside the kernel, not by one tiny kernel per operation.
# Each node kind: its meaning on 0-dim float64 tensors and Python numbers (what the eager rule
# computes, applied again for the foreach executor and for scalar state such as Nadam's
# ``mu_product``), and its Triton form in float64. ``dsqrt`` is also ``x ** 0.5`` (torch's CUDA
# ``pow`` takes that exponent as ``sqrt``), ``dsquare`` ``x ** 2``; ``number / x`` is
# ``x.reciprocal() * number`` and ``x / number`` is ``x * (1 / number)`` with the reciprocal taken
# in double on the host, as torch computes both; a ``dconst`` is a number argument (float64 bits).
DEVICE_OPS: dict[str, tuple[Callable[..., Any], str]] = {
    "dadd": (operator.add, "({a} + {b})"), "dsub": (operator.sub, "({a} - {b})"),
    "dmul": (operator.mul, "({a} * {b})"), "ddiv": (operator.truediv, "({a} / {b})"),
    "drecip": (lambda a: a.reciprocal(), "(1.0 / {a})"), "dneg": (operator.neg, "(-{a})"),
    "dsqrt": (lambda a: a ** 0.5, "tl.sqrt({a})"),  # float64: sqrt.rn, as CUDA's sqrt
    "dsquare": (lambda a: a ** 2, "({a} * {a})"),
    "dpow": (operator.pow, "pow64({a}, {b})"),  # libdevice's pow (CUDA's), as torch's CUDA pow
    "dcast": (lambda a: a, "{a}.to(CT)"),  # where a device value meets a tensor: rounded to its type
}
TORCH_POW_SPECIAL = {-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0}  # exponents torch's pow computes otherwise


def live_nodes(nodes: Any, roots: Any, leaves: Any) -> list[int]:
    """The nodes of an expression DAG (``nodes[i] = (op, *argument indices)``, arguments before
    their users) that ``roots`` depend on, themselves included, in evaluation order; nodes whose op
    is in ``leaves`` have no node arguments."""
    needed: set[int] = set()
    stack = list(roots)
    while stack:
        i = stack.pop()
        if i in needed:
            continue
        needed.add(i)
        if nodes[i][0] not in leaves:
            stack.extend(nodes[i][1:])
    return sorted(needed)


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
        """A slot for a number meeting a tensor: ``("scalar", slot)`` for a Python number; for a
        device value (:class:`DVal`, or a 0-dim tensor on the trace's device) a ``dcast`` node."""
        if isinstance(value, torch.Tensor):
            if self.device is None or value.dim() != 0 or value.device != self.device:
                raise Unsupported("a real tensor met a traced one (tensor hyperparameters run eagerly)")
            value = self.device_input(value)
        if isinstance(value, DVal):
            if value.trace is not self:
                raise Unsupported("device values from two traces")
            return self.node("dcast", value.index)
        if isinstance(value, Sym):  # a recorded number: its value now, its source for replays
            kind = "scalar"
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise Unsupported(f"operand of type {type(value).__name__}")
        else:
            kind, value = "scalar", float(value)
        self.scalars.append(value)
        self.nodes.append((kind, len(self.scalars) - 1))  # one node per slot, never shared
        return Vec(self, len(self.nodes) - 1)

    def input(self, slot: int) -> "Vec":
        return self.node("in", slot)

    def device_input(self, tensor: torch.Tensor) -> "DVal":
        """A 0-dim tensor on the device (a counter, scalar state): read by the kernel from memory
        when it runs, widened to float64; its slot holds the tensor."""
        self.scalars.append(tensor)
        self.nodes.append(("dscalar", len(self.scalars) - 1))
        return DVal(self, len(self.nodes) - 1)

    def device_constant(self, value: float) -> int:
        """A number in a device computation: a float64 argument of the kernel (a slot, never shared)."""
        self.scalars.append(float(value))
        self.nodes.append(("dconst", len(self.scalars) - 1))
        return len(self.nodes) - 1

    def device_node(self, op: str, *args: int) -> "DVal":
        key = (op, *args)
        index = self._memo.get(key)
        if index is None:
            index = self._memo[key] = len(self.nodes)
            self.nodes.append(key)
        return DVal(self, index)

    def device_value(self, index: int, cache: dict[int, Any] | None = None) -> Any:
        """Node ``index`` of the device computation, computed now: see :func:`device_value`."""
        return device_value(self.nodes, self.scalars, index, {} if cache is None else cache)

    def live(self, roots: Any) -> list[int]:
        """The nodes that ``roots`` depend on (themselves included), in evaluation order."""
        return live_nodes(self.nodes, roots, LEAVES)


def device_value(nodes: Any, scalars: Any, index: int, cache: dict[int, Any]) -> Any:
    """Node ``index`` of a trace's device computation, computed now with torch on the slots'
    tensors (``scalars``: the step's slot values): the same operations, in the same order, as the
    eager rule; a 0-dim float64 tensor (a number for a ``dconst``)."""
    if index not in cache:
        op, *args = nodes[index]
        if op == "dscalar":
            cache[index] = scalars[args[0]].to(torch.float64)
        elif op == "dconst":
            cache[index] = scalars[args[0]]
        else:
            cache[index] = DEVICE_OPS[op][0](*(device_value(nodes, scalars, a, cache) for a in args))
    return cache[index]


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


def _number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


class DVal:
    """A number computed on the device from a capturable step's 0-dim tensors (``step``,
    ``mu_product``): each operation a node of the trace (:data:`DEVICE_OPS`), nothing run now.
    A use that needs its value on the host (a comparison, ``float()``) raises :class:`Unsupported`."""

    __slots__ = ("trace", "index")

    def __init__(self, trace: Trace, index: int) -> None:
        self.trace, self.index = trace, index

    def _index(self, other: Any) -> int | None:
        if isinstance(other, DVal) and other.trace is self.trace:
            return other.index
        if _number(other):
            return self.trace.device_constant(float(other))
        return None

    def _op(self, op: str, other: Any, reverse: bool = False) -> Any:
        b = self._index(other)
        if b is None:
            return NotImplemented  # a traced tensor takes it from here (``Vec.__rmul__``)
        return self.trace.device_node(op, *((b, self.index) if reverse else (self.index, b)))

    def __add__(self, o): return self._op("dadd", o)
    def __radd__(self, o): return self._op("dadd", o, True)
    def __sub__(self, o): return self._op("dsub", o)
    def __rsub__(self, o): return self._op("dsub", o, True)
    def __mul__(self, o): return self._op("dmul", o)
    def __rmul__(self, o): return self._op("dmul", o, True)
    def __neg__(self): return self.trace.device_node("dneg", self.index)
    def __pos__(self): return self

    def __truediv__(self, o):
        if isinstance(o, DVal):
            return self._op("ddiv", o)
        if _number(o):  # torch: x * (1 / o), 1 / o in double
            return self._op("dmul", math.copysign(math.inf, o) if o == 0 else 1.0 / o)
        return NotImplemented

    def __rtruediv__(self, o):  # torch: ``number / tensor`` is ``tensor.reciprocal() * number``
        if self._index(o) is None:
            return NotImplemented
        return self.trace.device_node("drecip", self.index)._op("dmul", o)

    def __pow__(self, e):
        if _number(e):
            if e == 0.5:
                return self.sqrt()
            if e == 2:
                return self.trace.device_node("dsquare", self.index)
            if e in TORCH_POW_SPECIAL:
                raise Unsupported(f"a device value ** {e}")
        return self._op("dpow", e)

    def __rpow__(self, base):
        if _number(base) and base == 1:
            return DVal(self.trace, self.trace.device_constant(1.0))  # torch fills ones
        return self._op("dpow", base, True)

    def sqrt(self) -> "DVal":
        return self.trace.device_node("dsqrt", self.index)

    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None):
        if func in (torch.sqrt, torch.Tensor.sqrt) and isinstance(args[0], DVal) and not kwargs and len(args) == 1:
            return args[0].sqrt()
        if any(isinstance(a, Vec) for a in args):  # ``torch.mul(step_size, m)``: the tensor's recording
            return Vec.__torch_function__(func, types, args, kwargs)
        raise Unsupported(f"torch function {getattr(func, '__name__', func)} on a device value")

    def _host(self, *args: Any) -> Any:
        raise Unsupported("a device value used on the host (comparison, float, branch)")

    __bool__ = __float__ = __int__ = __index__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _host
    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        raise Unsupported(f"method {name} of a device value", op=name)


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
    return lambda *operands: _apply(op, *operands)


for _op in OPS.values():
    for _dunder in _op.dunders:
        setattr(Vec, _dunder, _recorder(_op.name, reflected=_dunder.startswith("__r")))
    for _method in _op.functions:  # ``x.sqrt()`` as well as ``torch.sqrt(x)``
        setattr(Vec, _method, _recorder(_op.name, reflected=False))


def _zeros_like(x: Vec, *args: Any, **kwargs: Any) -> Vec:
    return x.trace.node("zero")


def _ones_like(x: Vec, *args: Any, **kwargs: Any) -> Vec:
    return x.trace.node("one")


def _clamp(x: Vec, min: Any = None, max: Any = None) -> Vec:
    """``torch.clamp`` as ``min(max(x, lo), hi)`` (its definition; NaN in ``x`` stays NaN)."""
    if isinstance(min, Vec) or isinstance(max, Vec):
        raise Unsupported("clamp with tensor bounds", op="clamp")
    if min is not None:
        x = _apply("max", x, min)
    if max is not None:
        x = _apply("min", x, max)
    return x


def _same(x: Vec, *args: Any, **kwargs: Any) -> Vec:
    return x


_TORCH_FUNCTIONS: dict[Any, Callable] = {
    torch.zeros_like: _zeros_like, torch.ones_like: _ones_like,
    torch.clamp: _clamp, torch.Tensor.clamp: _clamp,
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
    With ``device``, the 0-dim tensors there among ``arguments`` (a capturable step's counter and
    scalar state) become device values (:class:`DVal`): what the rule computes from them is
    recorded in the trace, for the kernel to compute, instead of being refused.
    """
    trace = Trace(device)
    proxies = {name: trace.input(slot) for slot, name in enumerate(vector_inputs)}
    if device is not None:
        arguments = {k: trace.device_input(v) if isinstance(v, torch.Tensor) and v.dim() == 0 and v.device == device
                     else v for k, v in arguments.items()}
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


# -- replaying a trace with the next step's numbers -------------------------------------------------
class Sym:
    """A Python number the rule computes with (``step``, ``lr``, ...), recorded so that the next
    step's value of everything derived from it is recomputed without calling the rule again.

    Arithmetic gives new recorded numbers; a comparison or truth test (``is_zero(momentum)``)
    returns its concrete answer and is kept as a *guard*: a later step whose numbers answer it
    differently is traced afresh. A use the recording cannot follow (``float(x)``, ``math.*``)
    raises :class:`Unsupported`, and the caller traces each step concretely instead.
    """

    __slots__ = ("program", "index", "value")

    def __init__(self, program: "ScalarProgram", index: int, value: Any) -> None:
        self.program, self.index, self.value = program, index, value

    def _op(self, fn: Callable, other: Any, reverse: bool = False) -> Any:
        if isinstance(other, Sym):
            b = ("s", other.index)
            other_value = other.value
        elif isinstance(other, numbers.Real) and not isinstance(other, bool):
            b, other_value = ("c", other), other
        else:
            return NotImplemented  # a traced tensor (Vec) takes it from here; anything else: TypeError
        a = ("s", self.index)
        x, y = (other_value, self.value) if reverse else (self.value, other_value)
        return self.program.record(fn, (b, a) if reverse else (a, b), fn(x, y))

    def __add__(self, o): return self._op(operator.add, o)
    def __radd__(self, o): return self._op(operator.add, o, True)
    def __sub__(self, o): return self._op(operator.sub, o)
    def __rsub__(self, o): return self._op(operator.sub, o, True)
    def __mul__(self, o): return self._op(operator.mul, o)
    def __rmul__(self, o): return self._op(operator.mul, o, True)
    def __truediv__(self, o): return self._op(operator.truediv, o)
    def __rtruediv__(self, o): return self._op(operator.truediv, o, True)
    def __pow__(self, o): return self._op(operator.pow, o)
    def __rpow__(self, o): return self._op(operator.pow, o, True)
    def __neg__(self): return self.program.record(operator.neg, (("s", self.index),), -self.value)
    def __pos__(self): return self

    def _guard(self, fn: Callable, other: Any) -> Any:
        if isinstance(other, Sym):
            b, other_value = ("s", other.index), other.value
        elif isinstance(other, numbers.Real):
            b, other_value = ("c", other), other
        else:
            return NotImplemented  # a traced tensor records the reflected comparison
        result = bool(fn(self.value, other_value))
        self.program.guards.append((fn, ("s", self.index), b, result))
        return result

    def __eq__(self, o): return self._guard(operator.eq, o)
    def __ne__(self, o): return self._guard(operator.ne, o)
    def __lt__(self, o): return self._guard(operator.lt, o)
    def __le__(self, o): return self._guard(operator.le, o)
    def __gt__(self, o): return self._guard(operator.gt, o)
    def __ge__(self, o): return self._guard(operator.ge, o)
    def __bool__(self): return self._guard(operator.ne, 0)
    __hash__ = None  # type: ignore[assignment]

    def __float__(self):
        raise Unsupported("a recorded number used as a plain float")

    __int__ = __index__ = __round__ = __float__


class ScalarProgram:
    """The scalar arithmetic of one traced step: inputs first, then each recorded operation."""

    def __init__(self, names: list[str], values: list[Any]) -> None:
        self.names = names
        self.ops: list[tuple[Callable, tuple]] = []
        self.guards: list[tuple] = []
        self.inputs = [Sym(self, i, v) for i, v in enumerate(values)]

    def record(self, fn: Callable, args: tuple, value: Any) -> Sym:
        self.ops.append((fn, args))
        return Sym(self, len(self.inputs) + len(self.ops) - 1, value)

    def run(self, values: list[Any]) -> list[Any] | None:
        """Every recorded number for new input ``values``; None when a guard answers differently.

        The recording is compiled once into one straight-line Python function (the same
        operators on the same numbers, in the same order), so a replay costs a few microseconds."""
        if self._compiled is None or self._compiled[0] != (len(self.ops), len(self.guards)):
            self._compiled = ((len(self.ops), len(self.guards)), self._compile())
        return self._compiled[1](values)

    _compiled: tuple | None = None
    _SYMBOLS = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
                operator.pow: "**", operator.eq: "==", operator.ne: "!=", operator.lt: "<",
                operator.le: "<=", operator.gt: ">", operator.ge: ">="}

    def _compile(self) -> Callable[[list[Any]], list[Any] | None]:
        constants: list[Any] = []

        def arg(a: tuple) -> str:
            if a[0] == "s":
                return f"x{a[1]}"
            constants.append(a[1])  # passed as an object: its exact type and value
            return f"c[{len(constants) - 1}]"

        n = len(self.inputs)
        body = [f"    ({''.join(f'x{i}, ' for i in range(n))}) = values"] if n else []
        for k, (fn, args) in enumerate(self.ops, n):
            if fn is operator.neg:
                body.append(f"    x{k} = -{arg(args[0])}")
            else:
                body.append(f"    x{k} = {arg(args[0])} {self._SYMBOLS[fn]} {arg(args[1])}")
        for fn, a, b, result in self.guards:
            body.append(f"    if bool({arg(a)} {self._SYMBOLS[fn]} {arg(b)}) != {result!r}: return None")
        everything = ", ".join(f"x{i}" for i in range(n + len(self.ops)))
        source = ("def run(values):\n  try:\n" + "\n".join("  " + line for line in body)
                  + f"\n      return [{everything}]\n"
                  + "  except (ArithmeticError, TypeError, ValueError):\n      return None\n")
        namespace: dict[str, Any] = {"c": constants}
        exec(compile(source, "<optimlab scalar program>", "exec"), namespace)  # noqa: S102 - our own recording
        return namespace["run"]


class CachedTracer:
    """Traces of one bucket's rule, replayed while only its numbers change.

    The first step traces the rule with :class:`Sym` numbers; later steps with the same options
    (every argument that is not a number) rerun only the recorded scalar arithmetic to get the new
    slot values and scalar outputs — the expression DAG, hence the kernel, is the same. Results
    are those of a fresh trace: the same Python operations on the same numbers, in the same order.
    A rule that uses a number in a way the recording cannot follow is traced every step.
    """

    def __init__(self) -> None:
        self.entry: tuple | None = None
        self.concrete = False

    def __call__(self, update: Callable, vector_inputs: list[str], arguments: dict[str, Any],
                 name: str | None = None, device: torch.device | None = None) -> tuple[Trace, dict[str, Any]]:
        if self.concrete or device is not None:
            return trace_rule(update, vector_inputs, arguments, name, device)
        names, option_list = [], []
        for k, v in arguments.items():
            kind = type(v)
            if kind is float or kind is int or (kind is not bool and isinstance(v, numbers.Real)):
                names.append(k)
            elif isinstance(v, torch.Tensor):
                return trace_rule(update, vector_inputs, arguments, name, device)
            else:
                option_list.append((k, v))
        options = tuple(option_list)
        if self.entry is not None and self.entry[0] == options and self.entry[1].names == names:
            _, program, trace, sources, constants, out = self.entry
            values = program.run([arguments[k] for k in names])
            if values is not None:
                trace.scalars = [constants[i] if src is None else float(values[src]) for i, src in enumerate(sources)]
                return trace, {k: values[v.index] if isinstance(v, Sym) else v for k, v in out.items()}
        program = ScalarProgram(names, [arguments[k] for k in names])
        symbolic = {**arguments, **dict(zip(names, program.inputs))}
        try:
            trace, out = trace_rule(update, vector_inputs, symbolic, name)
            sources = [v.index if isinstance(v, Sym) else None for v in trace.scalars]
            constants = [None if isinstance(v, Sym) else float(v) for v in trace.scalars]
            self.entry = (options, program, trace, sources, constants, out)
        except Unsupported:
            self.concrete = True  # an op the table lacks warned already; eager follows either way
            return trace_rule(update, vector_inputs, arguments, name, device)
        trace.scalars = [constants[i] if src is None else float(v.value)
                         for i, (src, v) in enumerate(zip(sources, trace.scalars))]
        return trace, {k: v.value if isinstance(v, Sym) else v for k, v in out.items()}
