"""The web lab's fast path: a whole 2-D run as plain Python float arithmetic, read off the engine's
own definitions, giving the engine's numbers bit for bit.

A page request is small (a few optimizers, a few starts, a few hundred steps): the batched engine
spends nearly all of its time in per-operation overhead of torch on two-element tensors (about
5-30 us per op, plus autograd). Here the same arithmetic runs on Python floats (about 30 ns per
op), which are IEEE doubles rounded exactly like torch's float64 CPU kernels. Nothing is written
twice:

- the **landscape** ``fn(x, y)`` is called once with proxies in place of ``x`` and ``y``; each torch
  operation it performs is recorded, and its gradient is built by reverse-mode differentiation
  with the backward formulas of torch's autograd (``derivatives.yaml``) applied in autograd's
  order (nodes in reverse creation order; several contributions to one value summed in arrival
  order), so the gradient is the one ``torch.autograd.grad`` returns;
- the **update rule** (``optimlab.algorithms``) is called with proxies for the parameter, gradient
  and state, and with *scalar* proxies for ``step``, ``lr`` and scalar state (Nadam's
  ``mu_product``): what the rule computes in Python floats (``lr / (1 - beta1 ** step)``) is
  recorded with Python's semantics, what it computes on tensors with torch's. A rule that
  branches on a traced value raises :class:`Unsupported`.

torch's float64 sqrt, exp, log, cos, sin and tanh are Intel MKL's vector math (not libm: they
differ in the last bit in about 1% of cases), so the generated code calls the same MKL routines
from torch's own library (:class:`_VML`, checked against torch when first used).

The recorded graphs are emitted as one Python function per (landscape, rule) that runs a whole
trajectory (only local names, the fixed operator table below and indices into a constants tuple
appear in its source; no text from a request), compiled once per structure. It drives the rule
exactly as :func:`optimlab.lab.engine.run` does. Anything the tracer does not model (per-trajectory
hyperparameter tensors, an op outside the table, a rule branching on a traced value, a machine
without MKL) runs the engine itself (:func:`run` falls back); ``tests/test_web_fastpath.py``
checks equality with ``engine.run`` on every landscape and lab optimizer. With ``record_state`` the
generated function also keeps each step's gradient and per-coordinate state (the web lab's
step-through view; equal to ``engine.run(record_state=True)``, tested in
``tests/test_web_teach.py``); noisy gradients run the engine. The hyperparameter
values are constants of the compiled function: a new value (a slider moved) costs one trace and
compile (about 10 ms).
"""

from __future__ import annotations

import math
import numbers
from functools import lru_cache
from typing import Any, Callable

import torch

from .. import catalogue, schedules
from ..catalogue import Entry
from ..kernels.trace import live_nodes
from ..lab import engine
from ..lab.landscapes import Landscape, get_landscape


class Unsupported(Exception):
    """Something the fast path does not model: the caller runs the engine instead."""


# --- the recorded graph ---------------------------------------------------------------------------

class Graph:
    """Nodes ``(op, *args)``; args are node indices (``const`` and ``in`` hold a constant / input
    slot). ``scalar[i]`` marks nodes computed with Python-float semantics (no tensor involved)."""

    def __init__(self) -> None:
        self.nodes: list[tuple] = []
        self.scalar: list[bool] = []
        self.consts: list[float] = []
        self.inputs: list[str] = []
        self.backward: dict[int, Callable[[int], list[tuple[int, int]]]] = {}

    def add(self, scalar: bool, *node: Any) -> int:
        self.nodes.append(node)
        self.scalar.append(scalar)
        return len(self.nodes) - 1

    def const(self, value: float) -> int:
        self.consts.append(float(value))
        return self.add(True, "const", len(self.consts) - 1)

    def input(self, name: str, scalar: bool) -> int:
        self.inputs.append(name)
        return self.add(scalar, "in", len(self.inputs) - 1)


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class _Proxy:
    __slots__ = ("g", "i")

    def __init__(self, g: Graph, i: int) -> None:
        self.g, self.i = g, i

    def __bool__(self) -> bool:
        raise Unsupported("a Python branch on a traced value")

    def __eq__(self, other: Any) -> bool:  # type: ignore[override]
        raise Unsupported("a comparison of a traced value")

    __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __eq__
    __hash__ = object.__hash__


class S(_Proxy):
    """A Python float of the rule (``step``, ``lr``, ``lr / (1 - beta1 ** step)``): Python semantics."""

    __slots__ = ()

    def _op(self, op: str, other: Any, reverse: bool = False) -> Any:
        if isinstance(other, V):
            return NotImplemented
        if isinstance(other, S):
            j = other.i
        elif _number(other):
            j = self.g.const(other)
        else:
            raise Unsupported(f"scalar operand of type {type(other).__name__}")
        a, b = (j, self.i) if reverse else (self.i, j)
        return S(self.g, self.g.add(True, op, a, b))

    def __add__(self, o): return self._op("add", o)
    def __radd__(self, o): return self._op("add", o, True)
    def __sub__(self, o): return self._op("sub", o)
    def __rsub__(self, o): return self._op("sub", o, True)
    def __mul__(self, o): return self._op("mul", o)
    def __rmul__(self, o): return self._op("mul", o, True)
    def __truediv__(self, o): return self._op("sdiv", o)
    def __rtruediv__(self, o): return self._op("sdiv", o, True)
    def __pow__(self, o): return self._op("spow", o)
    def __rpow__(self, o): return self._op("spow", o, True)
    def __neg__(self): return S(self.g, self.g.add(True, "neg", self.i))
    def __pos__(self): return self
    def __float__(self):
        raise Unsupported("float() of a traced scalar")


class V(_Proxy):
    """An element-wise tensor value: torch's float64 CPU semantics, with autograd's backward."""

    __slots__ = ()

    def _operand(self, other: Any) -> int:
        if isinstance(other, _Proxy):
            if other.g is not self.g:
                raise Unsupported("operands from two graphs")
            return other.i
        if _number(other):
            return self.g.const(other)
        raise Unsupported(f"operand of type {type(other).__name__}")

    def _new(self, op: str, *args: int, backward: Callable | None = None) -> "V":
        i = self.g.add(False, op, *args)
        if backward is not None:
            self.g.backward[i] = backward
        return V(self.g, i)

    # each backward maps the node's gradient (a node index) to [(input node, contribution), ...]
    def __add__(self, o):
        j = self._operand(o)
        return self._new("add", self.i, j, backward=lambda gr, a=self.i, b=j: [(a, gr), (b, gr)])

    def __radd__(self, o):  # number + tensor: torch adds the number to the tensor
        j = self._operand(o)
        return self._new("add", self.i, j, backward=lambda gr, a=self.i, b=j: [(a, gr), (b, gr)])

    def __sub__(self, o):
        j = self._operand(o)
        g = self.g
        return self._new("sub", self.i, j,
                         backward=lambda gr, a=self.i, b=j: [(a, gr), (b, g.add(False, "neg", gr))])

    def __rsub__(self, o):  # rsub: other - self
        j = self._operand(o)
        g = self.g
        return self._new("sub", j, self.i,
                         backward=lambda gr, a=j, b=self.i: [(a, gr), (b, g.add(False, "neg", gr))])

    def __mul__(self, o):
        j = self._operand(o)
        g = self.g
        return self._new("mul", self.i, j, backward=lambda gr, a=self.i, b=j: [
            (a, g.add(False, "mul", gr, b)), (b, g.add(False, "mul", gr, a))])

    def __rmul__(self, o):  # number * tensor: torch multiplies the tensor by the number
        j = self._operand(o)
        g = self.g
        return self._new("mul", self.i, j, backward=lambda gr, a=self.i, b=j: [
            (a, g.add(False, "mul", gr, b)), (b, g.add(False, "mul", gr, a))])

    def __truediv__(self, o):
        j = self._operand(o)
        g = self.g

        def back(gr, a=self.i, b=j):
            # DivBackward0: self: grad / other; other: -grad * ((self / other) / other)
            q = g.add(False, "div", g.add(False, "div", a, b), b)
            return [(a, g.add(False, "div", gr, b)), (b, g.add(False, "mul", g.add(False, "neg", gr), q))]
        return self._new("div", self.i, j, backward=back)

    def __rtruediv__(self, o):  # number / tensor: torch computes tensor.reciprocal() * number
        return self.reciprocal() * o

    def __neg__(self):
        g = self.g
        return self._new("neg", self.i, backward=lambda gr, a=self.i: [(a, g.add(False, "neg", gr))])

    def __pos__(self):
        return self

    def reciprocal(self) -> "V":
        g = self.g
        out = self._new("recip", self.i)
        # ReciprocalBackward0: -grad * (result * result)
        g.backward[out.i] = lambda gr, a=self.i, r=out.i: [
            (a, g.add(False, "mul", g.add(False, "neg", gr), g.add(False, "mul", r, r)))]
        return out

    def clone(self, *args: Any, **kwargs: Any) -> "V":
        return self

    def __pow__(self, exponent: Any) -> "V":
        if isinstance(exponent, _Proxy) or not _number(exponent):
            raise Unsupported("tensor ** non-constant")
        c = float(exponent)
        g = self.g

        def back(gr, a=self.i):  # PowBackward0: grad * (c * self.pow(c - 1)); pow(0) backward is 0
            if c == 0.0:
                return [(a, g.add(False, "zero"))]
            return [(a, g.add(False, "mul", gr, g.add(False, "mul", _pow_node(g, a, c - 1.0), g.const(c))))]
        out = _pow_node(g, self.i, c)
        g.backward[out] = back
        return V(g, out)

    def _unary(self, op: str, back: Callable[[int, int, int], list]) -> "V":
        out = self._new(op, self.i)
        self.g.backward[out.i] = lambda gr, a=self.i, r=out.i: back(gr, a, r)
        return out

    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None):
        handler = _TORCH.get(func)
        if handler is None or kwargs:
            raise Unsupported(f"torch function {getattr(func, '__name__', func)}")
        return handler(*args)


def _pow_node(g: Graph, a: int, c: float) -> int:
    """``a ** c`` as torch's CPU pow kernel computes it (special exponents first)."""
    if c == 0.0:
        return g.add(False, "one")
    if c == 1.0:
        return a
    if c == 2.0:
        return g.add(False, "mul", a, a)
    if c == 3.0:
        return g.add(False, "mul", g.add(False, "mul", a, a), a)
    if c == 0.5:
        return g.add(False, "sqrt", a)
    if c == -0.5:
        return g.add(False, "div", g.const(1.0), g.add(False, "sqrt", a))
    if c == -1.0:
        return g.add(False, "div", g.const(1.0), a)
    if c == -2.0:
        return g.add(False, "div", g.const(1.0), g.add(False, "mul", a, a))
    return g.add(False, "pow", a, g.const(c))


def _sqrt(x: V) -> V:  # SqrtBackward0: grad / (2 * result)
    g = x.g
    return x._unary("sqrt", lambda gr, a, r: [(a, g.add(False, "div", gr, g.add(False, "mul", r, g.const(2.0))))])


def _exp(x: V) -> V:  # ExpBackward0: grad * result
    g = x.g
    return x._unary("exp", lambda gr, a, r: [(a, g.add(False, "mul", gr, r))])


def _cos(x: V) -> V:  # CosBackward0: grad * -self.sin()
    g = x.g
    return x._unary("cos", lambda gr, a, r: [(a, g.add(False, "mul", gr, g.add(False, "neg", g.add(False, "sin", a))))])


def _sin(x: V) -> V:  # SinBackward0: grad * self.cos()
    g = x.g
    return x._unary("sin", lambda gr, a, r: [(a, g.add(False, "mul", gr, g.add(False, "cos", a)))])


def _log(x: V) -> V:  # LogBackward0: grad / self
    g = x.g
    return x._unary("log", lambda gr, a, r: [(a, g.add(False, "div", gr, a))])


def _tanh(x: V) -> V:  # TanhBackward0: grad * (1 - result * result)
    g = x.g
    return x._unary("tanh", lambda gr, a, r: [
        (a, g.add(False, "mul", gr, g.add(False, "sub", g.const(1.0), g.add(False, "mul", r, r))))])


def _abs(x: V) -> V:  # AbsBackward0: grad * self.sgn()
    g = x.g
    return x._unary("abs", lambda gr, a, r: [(a, g.add(False, "mul", gr, g.add(False, "sign", a)))])


def _maximum(a: Any, b: Any) -> V:  # rules only (no backward needed)
    x = a if isinstance(a, V) else b
    return x._new("max", x._operand(a), x._operand(b))


def _zeros_like(x: V, *args: Any, **kwargs: Any) -> V:
    return x._new("zero")


_TORCH: dict[Any, Callable] = {
    torch.sqrt: _sqrt, torch.Tensor.sqrt: _sqrt, torch.exp: _exp, torch.Tensor.exp: _exp,
    torch.cos: _cos, torch.Tensor.cos: _cos, torch.sin: _sin, torch.Tensor.sin: _sin,
    torch.log: _log, torch.Tensor.log: _log, torch.tanh: _tanh, torch.Tensor.tanh: _tanh,
    torch.abs: _abs, torch.Tensor.abs: _abs, torch.maximum: _maximum, torch.Tensor.maximum: _maximum,
    torch.zeros_like: _zeros_like, torch.clone: V.clone, torch.Tensor.clone: V.clone,
    torch.neg: V.__neg__, torch.Tensor.neg: V.__neg__,
    torch.reciprocal: V.reciprocal, torch.Tensor.reciprocal: V.reciprocal,
}


# --- emitting Python ------------------------------------------------------------------------------

def _ieee_div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0.0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _ieee_pow(a: float, c: float) -> float:
    if a != a:
        return math.nan
    try:
        r = math.pow(a, c)
    except OverflowError:
        return math.inf if a > 0 or float(c).is_integer() and int(c) % 2 == 0 else -math.inf
    except ValueError:  # negative base, fractional exponent; 0 ** negative
        if a == 0.0:
            return math.copysign(math.inf, a) if float(c).is_integer() and int(c) % 2 else math.inf
        return math.nan
    return r


class _VML:
    """torch's float64 CPU kernels for sqrt, exp, log, cos, sin and tanh call Intel MKL's vector
    math library (``vdSqrt`` ...), whose results differ from libm's (``math.sqrt`` is correctly
    rounded, MKL's is not, in about 1% of cases). The fast path calls the same MKL routines, one
    element at a time (MKL's results do not depend on the batch: tested against torch), through
    ctypes from torch's own library. :func:`available` checks them against torch at start-up."""

    NAMES = {"sqrt": "vdSqrt", "exp": "vdExp", "log": "vdLn", "cos": "vdCos", "sin": "vdSin", "tanh": "vdTanh"}

    def __init__(self) -> None:
        import ctypes
        import os

        self.functions: dict[str, Callable[[float], float]] = {}
        self.raw: dict[str, Any] = {}  # the ctypes functions: ``f(1, byref(x), byref(result))``
        self.error = ""
        try:
            lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        except OSError as exc:
            self.error = f"cannot load torch's CPU library ({exc})"
            return
        double, byref = ctypes.c_double, ctypes.byref
        for op, symbol in self.NAMES.items():
            fn = getattr(lib, symbol, None)
            if fn is None:
                self.error = f"torch's CPU library has no {symbol} (built without MKL)"
                return
            fn.restype = None
            self.raw[op] = fn

            def call(a: float, _fn=fn) -> float:
                x, r = double(a), double()
                _fn(1, byref(x), byref(r))
                return r.value
            self.functions[op] = call
        self.error = self._check()

    def _check(self) -> str:
        """'' when every function gives torch's bits on a spread of inputs (incl. inf, nan, -0)."""
        gen = torch.Generator().manual_seed(0)
        base = torch.cat([torch.randn(400, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(-6, 4, (400,), generator=gen),
                          torch.tensor([0.0, -0.0, 1.0, -1.0, math.inf, -math.inf, math.nan, 1e300, -1e-300, 710.0],
                                       dtype=torch.float64)])
        for op, fn in self.functions.items():
            want = getattr(torch, op)(base).tolist()
            for a, w in zip(base.tolist(), want):
                got = fn(a)
                if not (got == w or (got != got and w != w)) or math.copysign(1.0, got) != math.copysign(1.0, w):
                    return f"MKL's {op} gives {got!r} for {a!r} where torch gives {w!r}"
        return ""


_vml: _VML | None = None


def vml() -> _VML:
    global _vml
    if _vml is None:
        _vml = _VML()
    return _vml


def available() -> str:
    """'' when the fast path can give torch's bits on this machine, else the reason it cannot."""
    return vml().error


def _ieee_max(a: float, b: float) -> float:
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


def _sign(a: float) -> float:
    return float((a > 0.0) - (a < 0.0))


def helpers() -> dict[str, Any]:
    import ctypes

    return {"_div": _ieee_div, "_pow": _ieee_pow, "_max": _ieee_max, "_sign": _sign, "_fabs": math.fabs,
            "_double": ctypes.c_double, "_byref": ctypes.byref,
            **{f"_{op}": fn for op, fn in vml().functions.items()},
            **{f"_m_{op}": fn for op, fn in vml().raw.items()}}


#: the prologue of a generated function that calls MKL inline: one argument and one result cell
#: per call of the function (locals: thread-safe), passed by reference
VML_PROLOGUE = ["    _vx = _double()", "    _vr = _double()", "    _pvx = _byref(_vx)", "    _pvr = _byref(_vr)"]

_VEC = {"add": "{a} + {b}", "sub": "{a} - {b}", "mul": "{a} * {b}", "div": "_div({a}, {b})",
        "neg": "-{a}", "sqrt": "_sqrt({a})", "exp": "_exp({a})", "cos": "_cos({a})", "sin": "_sin({a})",
        "log": "_log({a})", "tanh": "_tanh({a})", "abs": "_fabs({a})", "sign": "_sign({a})",
        "pow": "_pow({a}, {b})", "max": "_max({a}, {b})", "recip": "_div(1.0, {a})", "zero": "0.0", "one": "1.0"}
_SCALAR = {"add": "{a} + {b}", "sub": "{a} - {b}", "mul": "{a} * {b}", "sdiv": "{a} / {b}", "spow": "{a} ** {b}",
           "neg": "-{a}"}


def _needed(g: Graph, outputs: list[int]) -> list[int]:
    return live_nodes(g.nodes, outputs, ("const", "in"))


class _Emitter:
    """Python source for graphs: each node ``i`` of a graph tagged ``T`` is the local ``T{i}``.

    Constants are bound once in the prologue from a tuple (``K``) rather than printed, scalar
    nodes of a rule (Python floats shared by both coordinates) get the tag ``shared`` and are
    computed once per step."""

    def __init__(self) -> None:
        self.prologue: list[str] = []
        self.consts: list[float] = []
        self._bound: set[str] = set()

    def body(self, g: Graph, outputs: list[int], inputs: list[str], tag: str, shared: str | None = None,
             emit_shared: bool = True, indent: str = "        ") -> tuple[list[str], list[str]]:
        lines: list[str] = []

        def name(i: int) -> str:
            op, *args = g.nodes[i]
            if op == "in":
                return inputs[args[0]]
            if op == "const":
                return f"{shared or tag}c{i}"
            return f"{shared if shared and g.scalar[i] else tag}{i}"

        for i in _needed(g, outputs):
            op, *args = g.nodes[i]
            if op == "in":
                continue
            if op == "const":
                local = name(i)
                if local not in self._bound:
                    self._bound.add(local)
                    self.consts.append(g.consts[args[0]])
                    self.prologue.append(f"    {local} = K[{len(self.consts) - 1}]")
                continue
            if shared and g.scalar[i] and not emit_shared:
                continue
            table = _SCALAR if g.scalar[i] else _VEC
            names = [name(a) for a in args] + ["", ""]
            if not g.scalar[i] and op in _VML.NAMES:  # MKL inline: no Python call, no allocation
                lines += [f"{indent}_vx.value = {names[0]}", f"{indent}_m_{op}(1, _pvx, _pvr)",
                          f"{indent}{name(i)} = _vr.value"]
                continue
            lines.append(f"{indent}{name(i)} = {table[op].format(a=names[0], b=names[1])}")
        return lines, [name(o) for o in outputs]


def _compile(source: str, consts: list[float], name: str) -> Callable:
    namespace = {"K": tuple(consts), **helpers()}
    exec(compile(source, f"<optimlab.web.fastpath:{name}>", "exec"), namespace)  # noqa: S102 (own graph)
    return namespace[name]


# --- the landscape ------------------------------------------------------------------------------

class CompiledLandscape:
    """A landscape's recorded graph: ``f`` and its gradient ``(gx, gy)`` as autograd computes them."""

    def __init__(self, land: Landscape) -> None:
        g = Graph()
        x, y = V(g, g.input("x", False)), V(g, g.input("y", False))
        try:
            f = land.fn(x, y)
        except Unsupported:
            raise
        except Exception as exc:  # the function used something the proxies lack
            raise Unsupported(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(f, V):
            raise Unsupported("the landscape does not depend on x or y")
        n_forward = len(g.nodes)
        # reverse mode, as torch's autograd engine runs it: nodes in reverse creation order
        grads: dict[int, int] = {f.i: g.const(1.0)}
        for i in range(n_forward - 1, -1, -1):
            if i not in grads or i not in g.backward:
                continue
            for target, contribution in g.backward[i](grads[i]):
                if g.nodes[target][0] == "const":
                    continue
                if target in grads:  # InputBuffer: old + new, in arrival order
                    grads[target] = g.add(False, "add", grads[target], contribution)
                else:
                    grads[target] = contribution
        zero = g.const(0.0)
        # select backward: each coordinate's gradient is scattered into zeros and summed (-0 -> +0)
        gx = g.add(False, "add", grads[x.i], zero) if x.i in grads else zero
        gy = g.add(False, "add", grads[y.i], zero) if y.i in grads else zero
        self.graph, self.f, self.gx, self.gy = g, f.i, gx, gy


@lru_cache(maxsize=64)
def compiled_landscape(land: Landscape) -> CompiledLandscape:
    return CompiledLandscape(land)


# --- the rule ---------------------------------------------------------------------------------------

class CompiledRule:
    """A rule's recorded graphs: ``first`` for step 1 (lazily created state is absent) and
    ``later`` for steps >= 2; inputs ``(param, grad, *vector state, step, lr, *scalar state)``,
    outputs ``[param, *vector state, *scalar state]``."""

    def __init__(self, spec: Entry, kwargs: dict[str, Any], state0: dict[str, Any]) -> None:
        self.rule = spec.rule
        fixed = {k: v for k, v in kwargs.items() if k != "lr"}
        if any(isinstance(v, torch.Tensor) for v in fixed.values()):
            raise Unsupported("per-trajectory hyperparameters")
        self.scalar_names = [k for k in state0 if k in self.rule.scalar_state]
        self.first_vector = [k for k in state0 if k not in self.rule.scalar_state]
        self.first, out_vector = self._trace(fixed, self.first_vector)
        self.later_vector = out_vector
        self.later, again = self._trace(fixed, out_vector)
        if again != out_vector:
            raise Unsupported("the rule's state changes shape after step 2")

    def _trace(self, fixed: dict[str, Any], vector_state: list[str]) -> tuple[tuple[Graph, list[int]], list[str]]:
        g = Graph()
        p, grad = V(g, g.input("param", False)), V(g, g.input("grad", False))
        state = {k: V(g, g.input(k, False)) for k in vector_state}
        step, lr = S(g, g.input("step", True)), S(g, g.input("lr", True))
        scalars = {k: S(g, g.input(k, True)) for k in self.scalar_names}
        extra = {"step": step} if self.rule.counts_steps else {}
        try:
            out = self.rule.update(p, grad, **state, **scalars, **extra, lr=lr, **fixed)
        except Unsupported:
            raise
        except Exception as exc:
            raise Unsupported(f"{type(exc).__name__}: {exc}") from exc
        new_param = out.pop("param")
        vector_out = [k for k, v in out.items() if k not in self.rule.scalar_state]
        outputs = [new_param.i]
        for k in vector_out:
            if not isinstance(out[k], V):
                raise Unsupported(f"state {k!r} is not a tensor")
            outputs.append(out[k].i)
        for k in self.scalar_names:
            v = out.get(k, scalars[k])
            outputs.append(v.i if isinstance(v, _Proxy) else g.const(v))
        return (g, outputs), vector_out


@lru_cache(maxsize=256)
def _compiled_rule(name: str, fixed: tuple, state_keys: tuple) -> CompiledRule:
    spec = engine.get_optimizer(name)
    return CompiledRule(spec, dict(fixed), dict.fromkeys(state_keys))


# --- a run ----------------------------------------------------------------------------------------

def run(landscape: str | Landscape, optimizer: str | Entry, starts: Any, steps: int, *,
        lr: float | None = None, schedule: str | None = None, progress: Callable[[int], None] | None = None,
        noise: Any = None, record_state: bool = False, **hyper: float) -> engine.Run:
    """What :func:`optimlab.lab.engine.run` returns for the same arguments (float64), bit for bit.

    Runs the engine itself for anything the fast path does not take (see the module docstring),
    and for noisy gradients (``noise``). ``record_state`` also keeps each step's gradient and the
    rule's per-coordinate state after it (``Run.grads`` / ``Run.states``, as the engine's
    ``record_grads`` / ``record_state``).
    ``progress`` is called with a step number between trajectories (by the engine: after each
    step); an exception it raises stops the run.
    """
    engine_only = noise is not None and engine.parse_noise(noise) is not None and engine.parse_noise(noise).active
    try:
        if engine_only:
            raise Unsupported("noisy gradients")
        if available():
            raise Unsupported(available())
        return _run(landscape, optimizer, starts, steps, lr=lr, schedule=schedule, progress=progress,
                    record=record_state, **hyper)
    except Unsupported:
        return engine.run(landscape, optimizer, starts, steps, lr=lr, schedule=schedule, progress=progress,
                          noise=noise if engine_only else None, record_grads=record_state,
                          record_state=record_state, **hyper)


@lru_cache(maxsize=512)
def _prepared(name: str, lr: float, hyper: tuple) -> tuple[dict[str, Any], dict[str, Any]]:
    return engine.prepare(engine.get_optimizer(name), 1, lr, dict(hyper), torch.float64)


def prepared(name: str, lr: float, hyper: tuple) -> tuple[dict[str, Any], dict[str, Any]]:
    """``engine.prepare`` for float hyperparameters (validated there), cached: it reads the
    optimizer class's signature each time. Returns copies."""
    kwargs, group = _prepared(name, lr, hyper)
    return dict(kwargs), dict(group)


def _run(landscape, optimizer, starts, steps, *, lr, schedule, progress=None, record=False, **hyper) -> engine.Run:
    land = get_landscape(landscape)
    spec = engine.get_optimizer(optimizer)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in [*hyper.values(), 0.0 if lr is None else lr]):
        raise Unsupported("per-trajectory hyperparameters")
    p = engine._as_points(starts, torch.float64)
    n = p.shape[0]
    kwargs, group = prepared(spec.name, catalogue.lab_lr(spec, land) if lr is None else lr,
                             tuple(sorted(hyper.items())))
    base_lr = kwargs["lr"]
    factors = schedules.factors(schedule, steps)
    lrs = [base_lr * f if f != 1.0 else base_lr for f in factors]
    try:
        fland = compiled_landscape(land)
    except TypeError:  # an unhashable landscape (never for the frozen dataclass): no cache
        fland = CompiledLandscape(land)
    state0 = spec.rule.init_state(p, group)
    init_scalars = {k: v.item() for k, v in state0.items() if k in spec.rule.scalar_state}
    init_vectors = {k: v for k, v in state0.items() if k not in spec.rule.scalar_state}
    if spec.lookahead:
        init_vectors["momentum_buffer"] = torch.zeros_like(p)
    fixed = tuple(sorted((k, v) for k, v in kwargs.items() if k != "lr"))
    rule = _compiled_rule(spec.name, fixed, tuple(init_vectors) + tuple(init_scalars))
    trajectory = _trajectory(fland, rule, spec.lookahead, record)
    momentum = float(kwargs["momentum"]) if spec.lookahead else 0.0
    paths: list[list[float]] = []
    losses: list[list[float]] = []
    records: list[list[float]] = []
    for i in range(n):
        if progress is not None:
            progress(0)
        args = [float(p[i, 0]), float(p[i, 1])]
        args += [float(init_vectors[k][i, 0]) for k in rule.first_vector]
        args += [float(init_vectors[k][i, 1]) for k in rule.first_vector]
        args += [init_scalars[k] for k in rule.scalar_names]
        path, loss, *rec = trajectory(*args, momentum, lrs, steps)
        paths.append(path)
        losses.append(loss)
        records += rec
    path_t = torch.tensor(paths, dtype=torch.float64).reshape(n, steps + 1, 2).transpose(0, 1).contiguous()
    loss_t = torch.tensor(losses, dtype=torch.float64).transpose(0, 1).contiguous()
    lr_col = torch.full((n,), base_lr, dtype=torch.float64)
    grads = states = None
    if record:  # per step: gx, gy, then each state's x, y after the step
        names = rule.later_vector
        rec_t = torch.tensor(records, dtype=torch.float64).reshape(n, steps, 1 + len(names), 2).permute(2, 1, 0, 3)
        grads = rec_t[0].contiguous()
        states = {k: rec_t[1 + j].contiguous() for j, k in enumerate(names)}
    return engine.Run(land, spec, path_t, loss_t, lr_col, factors, {}, grads, states)


_trajectories: dict[tuple[CompiledLandscape, CompiledRule, bool], Callable] = {}


def _trajectory(land: CompiledLandscape, rule: CompiledRule, lookahead: bool, record: bool = False) -> Callable:
    """One generated function running a whole trajectory: ``(x, y, *state x, *state y, *scalar
    state, momentum, lrs, steps) -> (path [x0, y0, x1, y1, ...], loss [f0 .. fT])``, driving the
    rule exactly as :func:`optimlab.lab.engine.run` does (NAG: the loss at ``w``, the gradient at
    the look-ahead point ``w - momentum * v``). With ``record`` it also returns, per step, the
    gradient and the per-coordinate state after the step (``[gx, gy, sx_k, sy_k, ...]``)."""
    key = (land, rule, lookahead, record)  # the objects themselves (identity), kept alive by the key
    fn = _trajectories.get(key)
    if fn is not None:
        return fn
    em = _Emitter()
    g = land.graph
    sx = [f"sx_{k}" for k in rule.first_vector]
    sy = [f"sy_{k}" for k in rule.first_vector]
    sc = [f"sc_{k}" for k in rule.scalar_names]
    lines = [f"def trajectory(x, y, {''.join(a + ', ' for a in sx + sy + sc)}momentum, lrs, steps):",
             "    path = [x, y]", "    loss = []", "    pa = path.append", "    la = loss.append",
             "    rec = []", "    ra = rec.append"]

    def step(graph_outputs: tuple[Graph, list[int]], vector_in: list[str], vector_out: list[str],
             tag: str, indent: str) -> list[str]:
        out: list[str] = []
        if lookahead:
            body, (f,) = em.body(g, [land.f], ["x", "y"], "V", indent=indent)
            out += body
            buf = "momentum_buffer"
            if buf not in vector_in:
                raise Unsupported("look-ahead without a momentum buffer")
            out.append(f"{indent}ex = x - momentum * sx_{buf}")
            out.append(f"{indent}ey = y - momentum * sy_{buf}")
            body, (_, gx, gy) = em.body(g, [land.f, land.gx, land.gy], ["ex", "ey"], "L", indent=indent)
        else:
            body, (f, gx, gy) = em.body(g, [land.f, land.gx, land.gy], ["x", "y"], "L", indent=indent)
        out += body
        out.append(f"{indent}la({f})")
        rg, routs = graph_outputs
        nv = len(vector_in)
        ins_x = ["x", gx, *[f"sx_{k}" for k in vector_in], "t", "lr", *sc]
        ins_y = ["y", gy, *[f"sy_{k}" for k in vector_in], "t", "lr", *sc]
        bx, ox = em.body(rg, routs, ins_x, f"{tag}x", shared=f"{tag}s", indent=indent)
        by, oy = em.body(rg, routs, ins_y, f"{tag}y", shared=f"{tag}s", emit_shared=False, indent=indent)
        out += bx + by
        if record:  # the gradient before x, y are reassigned (it may be one of them)
            out.append(f"{indent}ra({gx})")
            out.append(f"{indent}ra({gy})")
        targets = ["x", *[f"sx_{k}" for k in vector_out], *sc]
        out.append(f"{indent}{', '.join(targets)} = {', '.join(ox)}")
        targets_y = ["y", *[f"sy_{k}" for k in vector_out]]
        out.append(f"{indent}{', '.join(targets_y)} = {', '.join(oy[:1 + len(vector_out)])}")
        out.append(f"{indent}pa(x)")
        out.append(f"{indent}pa(y)")
        if record:
            for k in vector_out:
                out.append(f"{indent}ra(sx_{k})")
                out.append(f"{indent}ra(sy_{k})")
        del nv
        return out

    lines += ["    t = 1.0", "    lr = lrs[0]"]
    lines += step(rule.first, rule.first_vector, rule.later_vector, "A", "    ")
    lines += ["    for k in range(1, steps):", "        t = k + 1.0", "        lr = lrs[k]"]
    lines += step(rule.later, rule.later_vector, rule.later_vector, "B", "        ")
    body, (f,) = em.body(g, [land.f], ["x", "y"], "V", indent="    ")
    lines += body + [f"    la({f})", "    return (path, loss, rec)" if record else "    return path, loss"]
    source = "\n".join(lines[:1] + VML_PROLOGUE + em.prologue + lines[1:])
    fn = _compile(source, em.consts, "trajectory")
    if len(_trajectories) >= 512:
        _trajectories.clear()
    _trajectories[key] = fn
    return fn
