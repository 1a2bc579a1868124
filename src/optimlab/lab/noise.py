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
The recorded loss of a run stays the full (noise-free) ``f(w)``. The data landscapes and the
sampler the engine calls are in :mod:`optimlab.lab.sampled`; this module imports no torch (the
command line checks a spec before any work).

Spec strings (CLI ``--noise``, the web lab's ``noise=`` hash field, :func:`parse_noise`):
``"sd=0.5"``, ``"batch=1,seed=3"``, ``"sd=0.1,batch=8,seed=0"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
