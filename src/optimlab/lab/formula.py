"""A landscape typed as a formula in ``x`` and ``y``: a small, bounded, safe parser.

No user text is ever handed to ``eval``/``exec`` or an outside parser: the formula is tokenized
and parsed by the recursive-descent grammar below into a tree of :class:`Node`, constant
sub-expressions are folded (checked finite and bounded), and the tree is evaluated with torch
operations, so autograd differentiates it like the built-in landscapes (and the web lab's fast
path can trace it: :mod:`optimlab.web.fastpath`).

Grammar (``^`` and ``**`` are both powers, right-associative; ``2x``, ``x y``, ``2(x+1)`` and
``2 sin(x)`` multiply implicitly)::

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary | <implicit> power)*
    unary   := ("-" | "+") unary | power
    power   := primary (("^" | "**") unary)?
    primary := NUMBER | "x" | "y" | "pi" | "e" | FUNCTION "(" expr ")" | "(" expr ")"

Bounds (each refused with a message naming it): the formula's length (:data:`MAX_LENGTH`), its
nesting depth (:data:`MAX_DEPTH`: parentheses, functions, signs and powers), the number of nodes
(:data:`MAX_NODES`), numeric literals (:data:`MAX_LITERAL`), folded constants
(:data:`MAX_CONSTANT`), exponents (a constant in [-:data:`MAX_EXPONENT`, :data:`MAX_EXPONENT`];
a variable exponent only over a positive constant base, as ``exp(u * log(c))``), the window
(finite, within [-:data:`MAX_COORDINATE`, :data:`MAX_COORDINATE`], each side at least
:data:`MIN_SPAN` wide), and the values: ``f`` must be finite and at most :data:`MAX_VALUE` in
magnitude on a :data:`CHECK_GRID` x :data:`CHECK_GRID` grid over the window.

The landscape's minima are not known in advance: they are found numerically (:func:`find_minima`:
the local minima of the check grid, refined by damped Newton steps inside the window, the lowest
first; points on the window's edge only when there is no minimum inside); ``f*`` is the lowest
value found. ``log_plot`` is chosen from the grid (the colours use
``log10(f - f* + 0.001)`` when the range above f* is more than :data:`LOG_PLOT_RATIO` times its
median, which picks the built-in landscapes' own choices).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
from torch import Tensor

from .landscapes import Landscape, Window

MAX_LENGTH = 200
MAX_DEPTH = 24
MAX_NODES = 160
MAX_LITERAL = 1e6
MAX_CONSTANT = 1e12
MAX_EXPONENT = 16.0
MAX_COORDINATE = 1000.0
MIN_SPAN = 1e-3
MAX_VALUE = 1e15
CHECK_GRID = 101
LOG_PLOT_RATIO = 5.0
MAX_MINIMA = 8

#: the name the lab and the web page use for a formula landscape
NAME = "custom"

#: the functions a formula may call: name -> (torch function, the same on a Python float)
FUNCTIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[float], float]]] = {
    "sin": (torch.sin, math.sin), "cos": (torch.cos, math.cos),
    "exp": (torch.exp, math.exp), "log": (torch.log, math.log), "sqrt": (torch.sqrt, math.sqrt),
    "tanh": (torch.tanh, math.tanh), "abs": (torch.abs, abs),
}
CONSTANTS = {"pi": math.pi, "e": math.e}
VARIABLES = ("x", "y")


class FormulaError(ValueError):
    """A formula or window the lab refuses; the message names the problem (and where)."""


# --- the tree -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    """``op`` is ``num`` (``value``), ``var`` (``name``), ``neg``, ``add``/``sub``/``mul``/``div``/``pow``
    (``args``) or ``call`` (``name`` and one arg)."""

    op: str
    args: tuple["Node", ...] = ()
    value: float = 0.0
    name: str = ""

    @property
    def constant(self) -> bool:
        return self.op == "num"


_TOKEN = re.compile(r"\s*(?:(?P<num>\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op>\*\*|[-+*/^()]))")


def tokenize(text: str) -> list[tuple[str, str, int]]:
    """``(kind, text, position)`` tokens; anything outside the grammar's characters is refused."""
    out, pos = [], 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FormulaError(f"unexpected character {text[pos]!r} at position {pos} "
                               "(allowed: numbers, x, y, pi, e, + - * / ^ **, parentheses, "
                               f"{', '.join(FUNCTIONS)})")
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.nodes = 0
        self.end = len(text)

    # helpers
    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def at(self, *texts: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "op" and tok[1] in texts

    def take(self) -> tuple[str, str, int]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def where(self) -> str:
        tok = self.peek()
        return f"at position {tok[2]} ({tok[1]!r})" if tok else "at the end of the formula"

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError(f"the formula is nested too deeply (more than {MAX_DEPTH} levels of parentheses, "
                               f"functions, signs and powers) {self.where()}")

    def node(self, node: Node) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FormulaError(f"the formula has more than {MAX_NODES} terms and operations")
        return node

    # grammar
    def parse(self) -> Node:
        if not self.tokens:
            raise FormulaError("the formula is empty")
        tree = self.expr()
        if self.peek() is not None:
            raise FormulaError(f"unexpected {self.peek()[1]!r} at position {self.peek()[2]}")
        return tree

    def expr(self) -> Node:
        left = self.term()
        while self.at("+", "-"):
            op = "add" if self.take()[1] == "+" else "sub"
            left = self.binary(op, left, self.term())
        return left

    def term(self) -> Node:
        left = self.unary()
        while True:
            if self.at("*", "/"):
                op = "mul" if self.take()[1] == "*" else "div"
                left = self.binary(op, left, self.unary())
            elif self.starts_primary(numbers=False):
                left = self.binary("mul", left, self.power())  # implicit: 2x, x y, 2(x + 1)
            else:
                return left

    def starts_primary(self, numbers: bool = True) -> bool:
        tok = self.peek()
        return tok is not None and (tok[0] == "name" or (numbers and tok[0] == "num") or tok[1] == "(")

    def unary(self) -> Node:
        if self.at("-", "+"):
            sign = self.take()[1]
            self.enter()
            inner = self.unary()
            self.depth -= 1
            return inner if sign == "+" else self.fold(self.node(Node("neg", (inner,))))
        return self.power()

    def power(self) -> Node:
        base = self.primary()
        if self.at("^", "**"):
            self.take()
            self.enter()
            exponent = self.unary()
            self.depth -= 1
            return self.binary("pow", base, exponent)
        return base

    def primary(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise FormulaError("the formula ends where a number, x, y, a function or '(' was expected")
        kind, text, pos = tok
        if kind == "num":
            self.take()
            value = float(text)
            if not math.isfinite(value) or abs(value) > MAX_LITERAL:
                raise FormulaError(f"the number {text} at position {pos} is larger than {MAX_LITERAL:g} "
                                   f"(numbers may be at most {MAX_LITERAL:g} in magnitude)")
            return self.node(Node("num", value=value))
        if kind == "name":
            self.take()
            if text in VARIABLES:
                return self.node(Node("var", name=text))
            if text in CONSTANTS:
                return self.node(Node("num", value=CONSTANTS[text]))
            if text in FUNCTIONS:
                if not self.at("("):
                    raise FormulaError(f"the function {text} at position {pos} needs parentheses: {text}(...)")
                self.take()
                self.enter()
                arg = self.expr()
                self.close(pos)
                self.depth -= 1
                return self.fold(self.node(Node("call", (arg,), name=text)))
            allowed = ", ".join([*VARIABLES, *CONSTANTS, *FUNCTIONS])
            raise FormulaError(f"unknown name {text!r} at position {pos} (allowed: {allowed})")
        if text == "(":
            self.take()
            self.enter()
            if self.at(")"):
                raise FormulaError(f"empty parentheses at position {pos}")
            inner = self.expr()
            self.close(pos)
            self.depth -= 1
            return inner
        raise FormulaError(f"unexpected {text!r} at position {pos}: a number, x, y, a function or '(' was expected")

    def close(self, opened: int) -> None:
        if not self.at(")"):
            raise FormulaError(f"the '(' at position {opened} is not closed ({self.where()})")
        self.take()

    def binary(self, op: str, a: Node, b: Node) -> Node:
        if op == "pow" and not b.constant:
            if not a.constant:
                raise FormulaError("a variable exponent is allowed only over a positive constant base "
                                   "(write exp(...) or e^(...), 2^x; not x^y)")
            if a.value <= 0:
                raise FormulaError(f"a variable exponent needs a positive base, got {a.value:g}")
            # c^u = exp(u * log(c)), e^u = exp(u)
            log_c = self.node(Node("num", value=math.log(a.value)))
            u = b if a.value == math.e else self.fold(self.node(Node("mul", (log_c, b))))
            return self.fold(self.node(Node("call", (u,), name="exp")))
        if op == "pow" and abs(b.value) > MAX_EXPONENT:
            raise FormulaError(f"the exponent {b.value:g} is outside [-{MAX_EXPONENT:g}, {MAX_EXPONENT:g}]")
        return self.fold(self.node(Node(op, (a, b))))

    def fold(self, node: Node) -> Node:
        """A node whose arguments are all constants becomes one constant (finite and bounded)."""
        if not node.args or not all(a.constant for a in node.args):
            return node
        v = [a.value for a in node.args]
        what = {"neg": "-", "add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "^"}.get(node.op, node.name)
        try:
            if node.op == "neg":
                value = -v[0]
            elif node.op == "add":
                value = v[0] + v[1]
            elif node.op == "sub":
                value = v[0] - v[1]
            elif node.op == "mul":
                value = v[0] * v[1]
            elif node.op == "div":
                value = v[0] / v[1]
            elif node.op == "pow":
                value = math.pow(v[0], v[1])
            else:
                value = FUNCTIONS[node.name][1](v[0])
        except (OverflowError, ValueError, ZeroDivisionError) as exc:
            args = ", ".join(f"{a:g}" for a in v)
            raise FormulaError(f"the constant {what}({args}) has no finite value ({exc})") from None
        if isinstance(value, complex) or not math.isfinite(value) or abs(value) > MAX_CONSTANT:
            raise FormulaError(f"the constant {what}({', '.join(f'{a:g}' for a in v)}) = {value} is larger than "
                               f"{MAX_CONSTANT:g} in magnitude")
        return Node("num", value=float(value))


def parse(text: str) -> Node:
    """The formula's tree; :class:`FormulaError` naming the problem for anything outside the
    grammar or its bounds (the length is checked before anything else is done)."""
    if not isinstance(text, str):
        raise FormulaError(f"the formula must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"the formula has {len(text)} characters; at most {MAX_LENGTH} are allowed")
    if not text.isascii():
        bad = next(c for c in text if not c.isascii())
        raise FormulaError(f"unexpected character {bad!r} at position {text.index(bad)} (plain ASCII only)")
    tree = _Parser(text).parse()
    if not uses_variables(tree):
        raise FormulaError("the formula must use x or y")
    return tree


def uses_variables(node: Node) -> bool:
    return node.op == "var" or any(uses_variables(a) for a in node.args)


def evaluate(node: Node, x: Tensor, y: Tensor) -> Tensor | float:
    """The tree with torch operations (constants stay Python floats, as in the built-in landscapes)."""
    op = node.op
    if op == "num":
        return node.value
    if op == "var":
        return x if node.name == "x" else y
    args = [evaluate(a, x, y) for a in node.args]
    if op == "neg":
        return -args[0]
    if op == "add":
        return args[0] + args[1]
    if op == "sub":
        return args[0] - args[1]
    if op == "mul":
        return args[0] * args[1]
    if op == "div":
        return args[0] / args[1]
    if op == "pow":
        return args[0] ** args[1]
    return FUNCTIONS[node.name][0](args[0])


def unparse(node: Node) -> str:
    """The tree written back with explicit operators and parentheses (what the lab understood)."""
    if node.op == "num":
        return repr(node.value) if node.value >= 0 else f"({node.value!r})"
    if node.op == "var":
        return node.name
    if node.op == "neg":
        return f"(-{unparse(node.args[0])})"
    if node.op == "call":
        return f"{node.name}({unparse(node.args[0])})"
    sym = {"add": " + ", "sub": " - ", "mul": " * ", "div": " / ", "pow": "^"}[node.op]
    return f"({unparse(node.args[0])}{sym}{unparse(node.args[1])})"


class FormulaFunction:
    """``f(x, y)`` of a parsed formula (a callable the :class:`Landscape` holds)."""

    def __init__(self, text: str, tree: Node) -> None:
        self.text, self.tree = text, tree

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        out = evaluate(self.tree, x, y)
        return out if isinstance(out, Tensor) or not isinstance(x, Tensor) else torch.full_like(x, out)

    def __repr__(self) -> str:
        return f"FormulaFunction({self.text!r})"


def check_window(window: object) -> Window:
    """``((x_min, x_max), (y_min, y_max))``, finite, within the bounds, each side wide enough."""
    try:
        (x0, x1), (y0, y1) = window  # type: ignore[misc]
        vals = [float(v) for v in (x0, x1, y0, y1)]
    except (TypeError, ValueError):
        raise FormulaError(f"window must be [[x_min, x_max], [y_min, y_max]], got {window!r}") from None
    for name, v in zip(("x_min", "x_max", "y_min", "y_max"), vals):
        if not math.isfinite(v) or abs(v) > MAX_COORDINATE:
            raise FormulaError(f"window {name} must be a finite number in "
                               f"[-{MAX_COORDINATE:g}, {MAX_COORDINATE:g}], got {v}")
    x0, x1, y0, y1 = vals
    for axis, lo, hi in (("x", x0, x1), ("y", y0, y1)):
        if not hi - lo >= MIN_SPAN:
            raise FormulaError(f"window {axis}_max - {axis}_min must be at least {MIN_SPAN:g}, got [{lo:g}, {hi:g}]")
    return (x0, x1), (y0, y1)


def _grid(window: Window, n: int) -> tuple[Tensor, Tensor]:
    (x0, x1), (y0, y1) = window
    xs = torch.linspace(x0, x1, n, dtype=torch.float64)
    ys = torch.linspace(y0, y1, n, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    return X, Y


def find_minima(fn: Callable[[Tensor, Tensor], Tensor], window: Window, Z: Tensor, X: Tensor, Y: Tensor,
                iterations: int = 40) -> list[tuple[float, float]]:
    """The local minima of ``fn`` inside ``window``, lowest first (at most :data:`MAX_MINIMA`); the
    lowest point of the window's edge where there is none inside.

    Candidates are the grid points no higher than their neighbours (the grid's lowest point
    always among them); each is refined by damped Newton steps (a step is kept only where it
    lowers ``f``; the damping grows where it does not) clamped to the window; points that meet
    are merged."""
    n = Z.shape[0]
    pad = torch.nn.functional.pad(Z[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    neighbours = torch.stack([pad[1 + di:n + 1 + di, 1 + dj:n + 1 + dj]
                              for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)])
    local = (Z <= neighbours.min(dim=0).values)
    idx = torch.nonzero(local.flatten()).flatten()
    idx = idx[torch.argsort(Z.flatten()[idx])][:2 * MAX_MINIMA]
    p = torch.stack([X.flatten()[idx], Y.flatten()[idx]], dim=1)
    (x0, x1), (y0, y1) = window
    lo = torch.tensor([x0, y0], dtype=torch.float64)
    hi = torch.tensor([x1, y1], dtype=torch.float64)
    damping = torch.full((p.shape[0],), 1e-6, dtype=torch.float64)

    def value(q: Tensor) -> Tensor:
        with torch.no_grad():
            return fn(q[:, 0], q[:, 1])

    f = value(p)
    span = max(x1 - x0, y1 - y0)
    still = 0
    for _ in range(iterations):
        q = p.clone().requires_grad_(True)
        with torch.enable_grad():
            fq = fn(q[:, 0], q[:, 1])
            (g,) = torch.autograd.grad(fq.sum(), q, create_graph=True)
            # a linear f has a constant gradient: no second derivative to take (zero Hessian)
            rows = ([torch.autograd.grad(g[:, k].sum(), q, retain_graph=True, allow_unused=True)[0] for k in range(2)]
                    if g.requires_grad else [None, None])
        g = g.detach()
        H = torch.stack([r if r is not None else torch.zeros_like(q) for r in rows], dim=1).detach()
        H = (H + H.transpose(1, 2)) / 2
        eye = torch.eye(2, dtype=torch.float64)
        scale = H.abs().amax(dim=(1, 2)).clamp(min=1.0)
        # Levenberg: (H + lambda I) s = -g with lambda large enough to make the matrix positive definite
        low = torch.linalg.eigvalsh(H)[:, 0]
        lam = torch.clamp(-low, min=0.0) + damping * scale
        step = -torch.linalg.solve(H + lam[:, None, None] * eye, g)
        step = torch.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0)
        cand = torch.minimum(torch.maximum(p + step, lo), hi)
        fc = value(cand)
        better = torch.isfinite(fc) & (fc <= f)
        moved = (cand - p).abs().amax(dim=1)
        p = torch.where(better[:, None], cand, p)
        f = torch.where(better, fc, f)
        damping = torch.where(better, damping / 3, damping * 10).clamp(1e-12, 1e12)
        still = still + 1 if bool((torch.where(better, moved, 0.0) <= 1e-13 * span).all()) else 0
        if still >= 4:  # nothing moved for four tries (each with more damping where refused)
            break
    order = torch.argsort(f)
    # a point on the window's edge is the lowest point of the window there, not a minimum of f:
    # kept only when no point inside is one
    edge = ((p - lo).abs() <= 1e-9 * span).any(dim=1) | ((hi - p).abs() <= 1e-9 * span).any(dim=1)
    inside = [i for i in order.tolist() if not bool(edge[i])]
    out: list[tuple[float, float]] = []
    for i in inside or order.tolist()[:1]:
        if not math.isfinite(float(f[i])):
            continue
        # a coordinate within rounding of zero is zero (a bowl's minimum, not -1e-323)
        pt = tuple(0.0 if abs(float(c)) < 1e-12 * span else float(c) for c in p[i])
        if all(math.hypot(pt[0] - a, pt[1] - b) > 1e-4 * span for a, b in out):
            out.append(pt)
        if len(out) == MAX_MINIMA:
            break
    return out


@lru_cache(maxsize=32)
def formula_landscape(text: str, window: Window) -> Landscape:
    """The :class:`Landscape` of ``f(x, y) = text`` over ``window`` (cached: the same text and window
    give the same object). :class:`FormulaError` for anything refused (module docstring)."""
    window = check_window(window)
    tree = parse(text)
    fn = FormulaFunction(text, tree)
    X, Y = _grid(window, CHECK_GRID)
    with torch.no_grad():
        Z = fn(X, Y)
    if not torch.isfinite(Z).all():
        bad = torch.nonzero(~torch.isfinite(Z))[0]
        raise FormulaError(f"the formula is not finite over the window (e.g. at x = {float(X[tuple(bad)]):.4g}, "
                           f"y = {float(Y[tuple(bad)]):.4g}); change the formula or the window")
    big = float(Z.abs().max())
    if big > MAX_VALUE:
        raise FormulaError(f"the formula reaches {big:.3g} over the window; values must stay within {MAX_VALUE:g}")
    minima = find_minima(fn, window, Z, X, Y)
    f = [float(fn(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0])
         for a, b in minima]
    low, high = float(Z.min()), float(Z.max())
    if f[0] < low - max(high - low, 1.0):
        a, b = minima[0]
        raise FormulaError(f"the formula falls to {f[0]:.3g} near x = {a:.4g}, y = {b:.4g}, far below its values on "
                           "the window's grid (a pole?); change the formula or the window")
    tied = sum(1 for v in f if v - f[0] <= 1e-9 * (1.0 + abs(f[0])))
    gap = (Z - min(f[0], float(Z.min()))).flatten()
    median = float(gap.median())
    log_plot = median > 0 and float(gap.max()) / median > LOG_PLOT_RATIO
    (x0, x1), (y0, y1) = window
    start = (x0 + 0.8 * (x1 - x0), y0 + 0.8 * (y1 - y0))
    return Landscape(NAME, fn, tuple(minima), window, start, formula=text,
                     description="your formula; minima found numerically in the window (f* = the lowest found)",
                     log_plot=log_plot, global_minima=tied)


__all__ = ["FormulaError", "Node", "parse", "evaluate", "unparse", "tokenize", "check_window", "formula_landscape",
           "find_minima", "FUNCTIONS", "CONSTANTS", "NAME", "MAX_LENGTH", "MAX_DEPTH", "MAX_NODES", "MAX_LITERAL",
           "MAX_EXPONENT", "MAX_COORDINATE", "MAX_VALUE"]
