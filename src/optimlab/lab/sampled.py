"""Data landscapes (least squares over sampled points) and the noisy-gradient sampler the engine
calls; the noise spec itself is :mod:`optimlab.lab.noise`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .landscapes import LANDSCAPES, Landscape
from .noise import Noise

GradientSampler = Callable[[Tensor, Tensor, int], Tensor]


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
