"""Two-dimensional loss landscapes: torch functions with their known minima and a plotting window.

Every landscape is a function ``f(x, y)`` written with torch operations, so gradients come from
autograd and a whole batch of points is evaluated at once (``points`` of shape ``(..., 2)``).
Each one carries its known minima (for "which minimum did the run reach"), its saddle points
where it has some, a window for plots (and for "the run left the window"), and a default start.

Sources of the test functions: Rosenbrock (1960); Beale (1958); Himmelblau (1972);
Rastrigin (1974); Ackley (1987); Goldstein & Price (1971); the catalogue of Surjanovic & Bingham,
"Virtual Library of Simulation Experiments" (www.sfu.ca/~ssurjano), for their minima and domains.
The bowl, elongated bowl, saddle, monkey saddle and shallow/deep double well illustrate the seed
document 002 (ravines, the elongated bowl, saddle points, local minima).

Add your own with :func:`register_landscape`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .._names import lookup

Point = tuple[float, float]
Window = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class Landscape:
    """A 2-D test function and what is known about it.

    ``fn(x, y)``   elementwise torch function of two tensors of the same shape.
    ``minima``     known minima; the first is a global one (all listed are global unless
                   ``global_minima`` says how many of the first entries are).
    ``window``     ``((x_min, x_max), (y_min, y_max))``: plotting range, and the box a run must
                   stay in not to count as diverged.
    ``start``      a default start point that shows the landscape's character.
    ``saddles``    known saddle points (for "escaped the saddle").
    ``log_plot``   plot ``log10(f - f* + 0.001)`` (:meth:`plot_height`): for landscapes spanning many decades.
    """

    name: str
    fn: Callable[[Tensor, Tensor], Tensor]
    minima: tuple[Point, ...]
    window: Window
    start: Point
    formula: str = ""
    description: str = ""
    saddles: tuple[Point, ...] = ()
    log_plot: bool = False
    global_minima: int | None = None

    def __post_init__(self) -> None:
        if not self.minima:
            raise ValueError(f"landscape {self.name!r} needs at least one known minimum")
        (x0, x1), (y0, y1) = self.window
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"window must be ((x_min, x_max), (y_min, y_max)) with min < max, got {self.window!r}")

    def value(self, points: Tensor) -> Tensor:
        """``f`` at ``points`` of shape ``(..., 2)``; returns shape ``(...)``."""
        return self.fn(points[..., 0], points[..., 1])

    def value_and_grad(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``f`` and its gradient (by autograd) at ``points`` of shape ``(..., 2)``."""
        with torch.enable_grad():
            p = points.detach().requires_grad_(True)
            f = self.value(p)
            (g,) = torch.autograd.grad(f.sum(), p)
        return f.detach(), g

    def grad(self, points: Tensor) -> Tensor:
        return self.value_and_grad(points)[1]

    def minima_tensor(self, dtype: torch.dtype = torch.float64) -> Tensor:
        return torch.tensor(self.minima, dtype=dtype)

    @property
    def min_value(self) -> float:
        """The global minimum value ``f*``."""
        values = self.value(self.minima_tensor())
        n = self.global_minima or len(self.minima)
        return float(values[:n].min())

    #: what log-scaled plots add to ``f - f*`` before the log (resolves the bottom of the valley)
    LOG_OFFSET = 1e-3

    def plot_height(self, f: Any) -> Any:
        """What figures and the web page draw for values ``f`` (a tensor, array or number): ``f`` itself,
        or ``log10(max(f - f*, 0) + 0.001)`` for landscapes marked ``log_plot``. The one definition of
        the log-plot transform."""
        if not self.log_plot:
            return f
        lib = torch if isinstance(f, Tensor) else np
        return lib.log10(lib.clip(f - self.min_value, 0, None) + self.LOG_OFFSET)

    @property
    def height_label(self) -> str:
        return "log10(f - f* + 0.001)" if self.log_plot else "f(x, y)"

    def evaluate_grid(self, n: int = 100) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``f`` on an ``n x n`` float64 grid over the window: ``(xs, ys, X, Y, Z)`` with
        ``X, Y`` from ``meshgrid(xs, ys, indexing="xy")`` and ``Z[i, j] = f(xs[j], ys[i])``."""
        (x0, x1), (y0, y1) = self.window
        xs = torch.linspace(x0, x1, n, dtype=torch.float64)
        ys = torch.linspace(y0, y1, n, dtype=torch.float64)
        X, Y = torch.meshgrid(xs, ys, indexing="xy")
        with torch.no_grad():
            Z = self.fn(X, Y)
        return xs, ys, X, Y, Z

    def describe(self) -> dict:
        """The landscape's facts as plain data."""
        return {"name": self.name, "formula": self.formula, "description": self.description,
                "minima": [list(m) for m in self.minima], "saddles": [list(s) for s in self.saddles],
                "window": [list(w) for w in self.window], "start": list(self.start), "min_value": self.min_value,
                "log_plot": self.log_plot}

    def in_window(self, points: Tensor) -> Tensor:
        (x0, x1), (y0, y1) = self.window
        x, y = points[..., 0], points[..., 1]
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


LANDSCAPES: dict[str, Landscape] = {}


def register_landscape(name: str, fn: Callable[[Tensor, Tensor], Tensor], minima: list[Point] | tuple[Point, ...],
                       window: Window, start: Point | None = None, *, replace: bool = False,
                       **options) -> Landscape:
    """Add a landscape to :data:`LANDSCAPES` (used by the engine, the plots and the CLI).

    ``fn(x, y)`` must be a torch function (autograd gives the gradient). ``minima`` is a list of
    ``(x, y)`` points, global minima first; other keyword arguments are :class:`Landscape` fields.
    """
    if not isinstance(name, str) or not name or any(c.isspace() or c == "," for c in name):
        raise ValueError(f"landscape name must be a non-empty string without spaces or commas, got {name!r}")
    if name in LANDSCAPES and not replace:
        raise ValueError(f"landscape {name!r} is already registered (pass replace=True to redefine it)")
    (x0, x1), (y0, y1) = window
    if start is None:
        start = (x0 + 0.8 * (x1 - x0), y0 + 0.8 * (y1 - y0))
    land = Landscape(name, fn, tuple((float(a), float(b)) for a, b in minima),
                     ((float(x0), float(x1)), (float(y0), float(y1))), (float(start[0]), float(start[1])), **options)
    LANDSCAPES[name] = land
    return land


def get_landscape(name: str | Landscape) -> Landscape:
    """The registered landscape called ``name`` (a :class:`Landscape` passes through)."""
    if isinstance(name, Landscape):
        return name
    return lookup("landscape", name, LANDSCAPES)


# --- the built-in landscapes -------------------------------------------------------------------

def bowl(x: Tensor, y: Tensor) -> Tensor:
    return x * x + y * y


def elongated_bowl(x: Tensor, y: Tensor) -> Tensor:
    """``0.05 x^2 + 5 y^2``: Hessian diag(0.1, 10), condition number 100 (the seed's ravine)."""
    return 0.05 * x * x + 5.0 * y * y


def rosenbrock(x: Tensor, y: Tensor) -> Tensor:
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def beale(x: Tensor, y: Tensor) -> Tensor:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2


def himmelblau(x: Tensor, y: Tensor) -> Tensor:
    return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2


def rastrigin(x: Tensor, y: Tensor) -> Tensor:
    two_pi = 2 * math.pi
    return 20 + x * x - 10 * torch.cos(two_pi * x) + y * y - 10 * torch.cos(two_pi * y)


def ackley(x: Tensor, y: Tensor) -> Tensor:
    """Ackley; ``sqrt(r^2 + 1e-30)`` keeps the gradient finite (zero) at the minimum itself."""
    r = torch.sqrt(0.5 * (x * x + y * y) + 1e-30)
    two_pi = 2 * math.pi
    return (-20 * torch.exp(-0.2 * r) - torch.exp(0.5 * (torch.cos(two_pi * x) + torch.cos(two_pi * y)))
            + math.e + 20)


def goldstein_price(x: Tensor, y: Tensor) -> Tensor:
    a = 1 + (x + y + 1) ** 2 * (19 - 14 * x + 3 * x * x - 14 * y + 6 * x * y + 3 * y * y)
    b = 30 + (2 * x - 3 * y) ** 2 * (18 - 32 * x + 12 * x * x + 48 * y - 36 * x * y + 27 * y * y)
    return a * b


def saddle(x: Tensor, y: Tensor) -> Tensor:
    """``x^2 - y^2 + y^4 / 32``: a saddle at the origin, minima (0, +-4) far away (f = -8)."""
    return x * x - y * y + y ** 4 / 32


def monkey_saddle(x: Tensor, y: Tensor) -> Tensor:
    """``x^3 - 3 x y^2 + (x^2 + y^2)^2 / 4``: a monkey saddle (zero gradient and Hessian) at the
    origin; in polar form ``r^3 cos(3 theta) + r^4 / 4``, minima at r = 3, theta = pi/3, pi, 5pi/3."""
    r2 = x * x + y * y
    return x ** 3 - 3 * x * y * y + r2 * r2 / 4


TILT = 0.3


def shallow_deep(x: Tensor, y: Tensor) -> Tensor:
    """``(x^2 - 1)^2 + 0.3 x + y^2``: a tilted double well, shallow local minimum near x = +0.96,
    deep global one near x = -1.04, a barrier near x = 0.08."""
    return (x * x - 1) ** 2 + TILT * x + y * y


def _double_well_minima() -> tuple[Point, Point]:
    """Roots of ``d/dx = 4x^3 - 4x + TILT``: the outer two are the minima (global = leftmost)."""
    roots = np.sort(np.roots([4.0, 0.0, -4.0, TILT]).real)
    return (float(roots[0]), 0.0), (float(roots[2]), 0.0)


_SQ3 = math.sqrt(3.0)
_BUILTIN = [
    ("bowl", bowl, [(0, 0)], ((-3, 3), (-3, 3)), (2.5, -1.5),
     dict(formula="x^2 + y^2", description="well-conditioned bowl (condition number 1)")),
    ("elongated_bowl", elongated_bowl, [(0, 0)], ((-10, 10), (-3, 3)), (-9.0, 2.0),
     dict(formula="0.05 x^2 + 5 y^2", description="ill-conditioned quadratic, condition number 100 (a ravine)")),
    ("rosenbrock", rosenbrock, [(1, 1)], ((-2, 2), (-1, 3)), (-1.2, 1.0),
     dict(formula="(1 - x)^2 + 100 (y - x^2)^2", description="curved narrow valley", log_plot=True)),
    ("beale", beale, [(3, 0.5)], ((-4.5, 4.5), (-4.5, 4.5)), (1.0, 1.5),
     dict(formula="(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2",
          description="flat plateaus and sharp ridges", log_plot=True)),
    ("himmelblau", himmelblau, [(3.0, 2.0), (-2.805118086952745, 3.131312518250573),
                                (-3.779310253377747, -3.283185991286170), (3.584428340330492, -1.848126526964404)],
     ((-5, 5), (-5, 5)), (0.0, 0.0),
     dict(formula="(x^2 + y - 11)^2 + (x + y^2 - 7)^2", description="four global minima (f = 0)", log_plot=True)),
    ("rastrigin", rastrigin, [(0, 0)], ((-5.12, 5.12), (-5.12, 5.12)), (2.2, -3.4),
     dict(formula="20 + x^2 - 10 cos(2 pi x) + y^2 - 10 cos(2 pi y)",
          description="a grid of local minima around one global minimum")),
    ("ackley", ackley, [(0, 0)], ((-5, 5), (-5, 5)), (3.5, -2.5),
     dict(formula="-20 exp(-0.2 sqrt((x^2 + y^2)/2)) - exp((cos 2 pi x + cos 2 pi y)/2) + e + 20",
          description="nearly flat outer region full of small local minima, deep central funnel")),
    ("goldstein_price", goldstein_price, [(0, -1)], ((-2, 2), (-2, 2)), (-1.5, 1.5),
     dict(formula="[1 + (x+y+1)^2 (19 - 14x + 3x^2 - 14y + 6xy + 3y^2)] * "
                  "[30 + (2x-3y)^2 (18 - 32x + 12x^2 + 48y - 36xy + 27y^2)]",
          description="global minimum f = 3 among several local minima, values up to 1e6", log_plot=True)),
    ("saddle", saddle, [(0, 4), (0, -4)], ((-3, 3), (-6, 6)), (2.0, 1e-3),
     dict(formula="x^2 - y^2 + y^4 / 32", description="saddle point at the origin; minima (0, +-4) far away",
          saddles=((0.0, 0.0),))),
    ("monkey_saddle", monkey_saddle, [(-3, 0), (1.5, 1.5 * _SQ3), (1.5, -1.5 * _SQ3)], ((-4, 4), (-4, 4)),
     (0.5, 0.01),
     dict(formula="x^3 - 3xy^2 + (x^2 + y^2)^2 / 4",
          description="monkey saddle (flat to second order) at the origin; three minima at r = 3",
          saddles=((0.0, 0.0),), log_plot=True)),
    ("shallow_deep", shallow_deep, list(_double_well_minima()), ((-2, 2.5), (-1.5, 1.5)), (2.2, 0.8),
     dict(formula="(x^2 - 1)^2 + 0.3 x + y^2",
          description="shallow local minimum (x ~ +0.96) beside a deep global one (x ~ -1.04)",
          global_minima=1, log_plot=True)),
]

for _name, _fn, _minima, _window, _start, _opts in _BUILTIN:
    register_landscape(_name, _fn, _minima, _window, _start, **_opts)

from . import sampled  # noqa: E402,F401  (registers the data landscapes: least_squares, scaled_features)
