"""Noisy gradients for the lab: real data sub-samples and additive noise, seeded.

Two sources of gradient noise, usable together:

* **data sub-samples** (``batch``): a *data landscape* is a least-squares loss over sampled data
  points ``(a_i, b_i)``, ``f(w) = 1/(2N) sum_i (a_i . w - b_i)^2``. With ``batch = N`` (or None)
  every step uses the whole data set (batch gradient descent); with ``batch = 1`` one example
  (stochastic gradient descent); in between, mini-batches of ``batch`` examples -- the seed's three
  variants (002, "Gradient Descent Variants"). Examples are drawn without replacement: each epoch
  is a fresh permutation per trajectory, cut into consecutive batches (the last one of an epoch
  may be shorter), as :mod:`optimlab.train.modes` does for real tasks;
* **additive noise** (``sd``): ``g = grad f(w) + sd * z`` with ``z ~ N(0, I)``, on any landscape.

All draws come from one ``torch.Generator`` seeded with ``seed``, so a noisy run is reproducible.
The recorded loss of a run stays the full (noise-free) ``f(w)``.

Spec strings (CLI ``--noise``, the web lab's ``noise=`` hash field, :func:`parse_noise`):
``"sd=0.5"``, ``"batch=1,seed=3"``, ``"sd=0.1,batch=8,seed=0"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .landscapes import LANDSCAPES, Landscape

GradientSampler = Callable[[Tensor, Tensor, int], Tensor]


@dataclass(frozen=True)
class Noise:
    """How a run's gradients are perturbed: ``sd`` (additive Gaussian, per coordinate), ``batch``
    (examples per step on a data landscape; None = all of them) and the ``seed`` of every draw."""

    sd: float = 0.0
    batch: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.sd, bool) or not isinstance(self.sd, (int, float)) or not math.isfinite(self.sd) or self.sd < 0:
            raise ValueError(f"noise sd must be a finite number >= 0, got {self.sd!r}")
        if self.batch is not None and (isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1):
            raise ValueError(f"noise batch must be an integer >= 1 (or None for the whole data set), got {self.batch!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"noise seed must be an integer in [0, 2**63), got {self.seed!r}")

    @property
    def active(self) -> bool:
        return self.sd > 0 or self.batch is not None

    def spec(self) -> str:
        """The spec string that :func:`parse_noise` reads back."""
        parts = [f"sd={self.sd:g}"] if self.sd else []
        if self.batch is not None:
            parts.append(f"batch={self.batch}")
        parts.append(f"seed={self.seed}")
        return ",".join(parts)


def parse_noise(spec: str | dict | Noise | None) -> Noise | None:
    """A :class:`Noise` from a spec string (``"sd=0.5,batch=8,seed=0"``), a dict or a Noise; None stays None."""
    if spec is None or isinstance(spec, Noise):
        return spec
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"sd", "batch", "seed"})
        if unknown:
            raise ValueError(f"noise has no field {', '.join(map(repr, unknown))} (allowed: sd, batch, seed)")
        return Noise(**spec)
    if not isinstance(spec, str):
        raise ValueError(f"noise must be a spec string like 'sd=0.5,batch=8,seed=0', got {spec!r}")
    if spec.strip() in ("", "none"):
        return None
    fields: dict[str, float | int] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("sd", "batch", "seed"):
            raise ValueError(f"noise spec {spec!r}: {part!r} is not sd=NUMBER, batch=INTEGER or seed=INTEGER")
        try:
            fields[key] = float(value) if key == "sd" else int(value)
        except ValueError:
            raise ValueError(f"noise spec {spec!r}: {key} must be a {'number' if key == 'sd' else 'integer'}, "
                             f"got {value!r}") from None
    return Noise(**fields)


@dataclass(frozen=True, eq=False)
class DataLandscape(Landscape):
    """A least-squares landscape over data points: ``f(w) = 1/(2N) sum_i (a_i . w - b_i)^2``.

    ``features`` ``(N, 2)`` and ``targets`` ``(N,)`` (float64). ``fn`` is the same loss written with
    the data's second moments, so it evaluates on any grid; :meth:`batch_grad` is the gradient of
    the mean loss over a sub-sample of the examples.
    """

    features: Tensor | None = None
    targets: Tensor | None = None

    @property
    def n_data(self) -> int:
        return int(self.features.shape[0])

    def batch_grad(self, points: Tensor, index: Tensor) -> Tensor:
        """``(1/|B|) sum_{i in B} a_i (a_i . w - b_i)`` for each point ``(N, 2)`` and its batch
        ``index`` ``(N, B)``."""
        a = self.features.to(points)[index]               # (N, B, 2)
        b = self.targets.to(points)[index]                # (N, B)
        residual = (a * points[:, None, :]).sum(-1) - b   # (N, B)
        return (a * residual[..., None]).mean(dim=1)


def make_data_landscape(name: str, n: int, scales: tuple[float, float], w_true: tuple[float, float],
                        target_sd: float, seed: int, window: tuple[tuple[float, float], tuple[float, float]],
                        start: tuple[float, float], description: str) -> DataLandscape:
    """Sample ``n`` points ``a_i = (scales[0] u, scales[1] v)`` with ``u, v ~ N(0, 1)`` and targets
    ``b_i = a_i . w_true + target_sd * e`` (numpy ``default_rng(seed)``), and build their least-squares
    landscape; its minimum is the least-squares solution."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 2)) * np.asarray(scales, dtype=np.float64)
    b = a @ np.asarray(w_true, dtype=np.float64) + target_sd * rng.standard_normal(n)
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    m = a.T @ a / n
    ab = a.T @ b / n
    bb = float(b @ b / n)
    sxx, sxy, syy, sxb, syb = float(m[0, 0]), float(m[0, 1]), float(m[1, 1]), float(ab[0]), float(ab[1])

    def fn(x: Tensor, y: Tensor) -> Tensor:
        return 0.5 * (sxx * x * x + 2 * sxy * x * y + syy * y * y) - (sxb * x + syb * y) + 0.5 * bb

    return DataLandscape(name, fn, ((float(sol[0]), float(sol[1])),), window, start,
                         formula=f"1/(2N) sum_i (a_i . w - b_i)^2, N = {n} sampled points",
                         description=description, features=torch.from_numpy(a), targets=torch.from_numpy(b))


#: the least-squares landscapes of the lab: features on one scale, and on two very different scales
#: (the seed's "CGPA on a 0-10 scale vs salary on a 0-200,000 scale", shrunk to 1 : 0.1)
DATA_LANDSCAPES = {
    "least_squares": make_data_landscape(
        "least_squares", 200, (1.0, 1.0), (1.0, -1.0), 0.5, 0, ((-3.0, 4.0), (-4.0, 3.0)), (-2.5, 2.5),
        "least squares over 200 sampled points (features on one scale): batch / mini-batch / stochastic GD"),
    "scaled_features": make_data_landscape(
        "scaled_features", 200, (1.0, 0.1), (1.0, -1.0), 0.1, 1, ((-3.0, 4.0), (-12.0, 10.0)), (-2.5, 8.0),
        "least squares with features on scales 1 and 0.1: the elongated bowl of differently-scaled features"),
}
for _name, _land in DATA_LANDSCAPES.items():
    LANDSCAPES.setdefault(_name, _land)


def gradient_sampler(landscape: Landscape, noise: Noise | None, n: int,
                     dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> GradientSampler | None:
    """A function ``(points, exact_grad, step) -> noisy gradient`` for a batch of ``n`` trajectories,
    or None when ``noise`` adds nothing. ``step`` is 1-based; the same step and point give the same
    batch (so NAG's look-ahead gradient uses the step's batch)."""
    if noise is None or not noise.active:
        return None
    if noise.batch is not None and not isinstance(landscape, DataLandscape):
        raise ValueError(f"noise batch needs a data landscape ({', '.join(DATA_LANDSCAPES)}); "
                         f"{landscape.name!r} has no data points (use sd= for additive noise)")
    gen = torch.Generator(device=device or "cpu").manual_seed(noise.seed)
    batch_of = _batches(landscape, noise.batch, n, gen, device) if noise.batch is not None else None
    sd = float(noise.sd)

    def sample(points: Tensor, exact: Tensor, step: int) -> Tensor:
        g = landscape.batch_grad(points, batch_of(step)) if batch_of is not None else exact
        if sd:
            g = g + sd * torch.randn(g.shape, generator=gen, dtype=g.dtype, device=g.device)
        return g

    return sample


def _batches(land: DataLandscape, batch: int, n: int, gen: torch.Generator,
             device: torch.device | None) -> Callable[[int], Tensor]:
    """``step -> (n, B)`` example indices: per trajectory, a fresh permutation every epoch cut into
    consecutive batches of ``batch`` (the last batch of an epoch holds the remainder)."""
    size = land.n_data
    b = min(batch, size)
    per_epoch = math.ceil(size / b)
    cache: dict[str, object] = {"epoch": -1, "perm": None, "step": None, "index": None}

    def index(step: int) -> Tensor:
        if cache["step"] == step:
            return cache["index"]
        epoch, k = divmod(step - 1, per_epoch)
        if epoch != cache["epoch"]:
            if b == size:
                cache["perm"] = torch.arange(size, device=device).expand(n, size)
            else:
                cache["perm"] = torch.rand((n, size), generator=gen, device=device).argsort(dim=1)
            cache["epoch"] = epoch
        idx = cache["perm"][:, k * b:(k + 1) * b]
        cache["step"], cache["index"] = step, idx
        return idx

    return index
