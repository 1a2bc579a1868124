"""The batched engine: thousands of 2-D trajectories as one tensor computation per algorithm.

A batch holds ``N`` trajectories (start points x hyperparameter values); the parameter is one
``(N, 2)`` tensor and every per-trajectory hyperparameter an ``(N, 1)`` tensor that broadcasts
against it. Each step evaluates the landscape and its gradient (autograd) at all ``N`` points and
calls the core's pure rule ``optimlab.algorithms.RULES[...].update`` once: no optimizer math is
written here. An LR sweep is one call with ``lr`` a tensor, not a Python loop.

Hyperparameters are prepared by :mod:`.hyper` from the catalogue entry's drop-in class, so a lab
trajectory is, number for number, what ``optimlab.SGD`` / ``Adam`` / ... produce one trajectory
at a time (:mod:`.reference` runs that loop; tested in ``tests/test_lab_engine.py``).

NAG (``nag``) is the seed's look-ahead form, which the lab can run because it can evaluate the
landscape anywhere (Sutskever et al., 2013, eq. 3-4)::

    look_ahead = w - beta * v
    v = beta * v + lr * grad(look_ahead)
    w = w - v

The engine computes ``grad(look_ahead)`` and hands it to the SGD rule with
``momentum_form="lr_in_velocity"`` (``v = beta*v + lr*g; w = w - v``). The iterates relate to
torch's ``SGD(nesterov=True)`` by ``p_torch = w - beta * v`` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .. import _json, catalogue
from ..catalogue import Entry
from .hyper import HyperValue, prepare
from .landscapes import Landscape, get_landscape
from .reference import reference_run  # noqa: F401  (re-exported: optimlab.lab.reference_run)
from .. import schedules
from .noise import Noise, parse_noise
from .sampled import gradient_sampler


def get_optimizer(name: str | Entry) -> Entry:
    """The catalogue entry called ``name`` (see :mod:`optimlab.catalogue`)."""
    return catalogue.get(name)


@dataclass
class Run:
    """The trajectories of one batched run.

    ``path``  ``(steps + 1, N, 2)``: ``path[0]`` are the starts, ``path[t]`` the point after step t.
    ``loss``  ``(steps + 1, N)``: ``f(path[t])``.
    ``grads`` ``(steps, N, 2)``: the gradient each step used (at the look-ahead point for NAG),
              kept when ``record_grads=True``.
    ``lr``    ``(N,)``: each trajectory's base learning rate; ``lr_factors[t-1]`` scales step t.
    ``hyper`` each trajectory's other swept hyperparameters, ``(N,)`` tensors.
    ``states`` ``{name: (steps, N, 2)}``: the rule's per-coordinate state after each step (its own
              names: ``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ``sum``, ...), kept when
              ``record_state=True``.
    """

    landscape: Landscape
    optimizer: Entry
    path: Tensor
    loss: Tensor
    lr: Tensor
    lr_factors: list[float]
    hyper: dict[str, Tensor] = field(default_factory=dict)
    grads: Tensor | None = None
    states: dict[str, Tensor] | None = None

    @property
    def steps(self) -> int:
        return self.path.shape[0] - 1

    @property
    def n(self) -> int:
        return self.path.shape[1]

    @property
    def final(self) -> Tensor:
        return self.path[-1]

    def as_dict(self, stride: int = 1, max_trajectories: int | None = None) -> dict[str, Any]:
        """Plain lists (JSON-ready, e.g. for a web page): every ``stride``-th step of each trajectory,
        plus the last one; non-finite numbers become None."""
        steps = list(range(0, self.steps + 1, max(1, stride)))
        if steps[-1] != self.steps:
            steps.append(self.steps)
        n = self.n if max_trajectories is None else min(self.n, max_trajectories)

        return {"landscape": self.landscape.name, "optimizer": self.optimizer.name, "label": self.optimizer.label,
                "steps": steps, "lr_factors": [self.lr_factors[t - 1] for t in steps[1:]],
                "trajectories": [{"lr": float(self.lr[i]), **{k: float(v[i]) for k, v in self.hyper.items()},
                                  "path": _json.finite(self.path[steps, i]), "loss": _json.finite(self.loss[steps, i])}
                                 for i in range(n)]}


def _as_points(starts: Any, dtype: torch.dtype) -> Tensor:
    pts = torch.as_tensor(starts, dtype=dtype).clone()
    if pts.dim() == 1:
        pts = pts.unsqueeze(0)
    if pts.dim() != 2 or pts.shape[1] != 2:
        raise ValueError(f"starts must have shape (N, 2) or (2,), got {tuple(pts.shape)}")
    if not torch.isfinite(pts).all():
        raise ValueError("starts must be finite")
    return pts


def run(landscape: str | Landscape, optimizer: str | Entry, starts: Any, steps: int, *,
        lr: HyperValue | None = None, schedule: str | None = None, record_grads: bool = False,
        dtype: torch.dtype = torch.float64, progress: Callable[[int], None] | None = None,
        noise: Noise | str | None = None, record_state: bool = False, **hyper: HyperValue) -> Run:
    """Run ``N`` trajectories of one optimizer for ``steps`` steps, as one tensor computation.

    ``starts``  ``(N, 2)`` points (or one ``(2,)`` point).
    ``lr``      a number, or one value per trajectory (tensor / sequence of length N); default:
                the entry's default for the landscape (:func:`optimlab.catalogue.lab_lr`).
    ``hyper``   other hyperparameters by the rule's names (``momentum``, ``alpha``, ``beta1``,
                ``beta2``, ``eps``, ``weight_decay``, ...), each a number or one value per trajectory.
    ``schedule`` a schedule spec (see :mod:`optimlab.schedules`); step t uses ``lr * s_t``.
    ``progress`` called with the step number after each step.
    ``noise``   noisy gradients (:mod:`optimlab.lab.noise`): a :class:`~optimlab.lab.noise.Noise` or a
                spec such as ``"sd=0.5,seed=0"`` or ``"batch=1,seed=0"`` (data landscapes); the
                recorded loss stays the noise-free ``f``.
    ``record_state`` keep the rule's per-coordinate state after every step (``Run.states``; the
                trajectory itself is the same, bit for bit).
    """
    threads = torch.get_num_threads()
    small = torch.as_tensor(starts).numel() < SINGLE_THREAD_BELOW
    if small and threads > 1:
        torch.set_num_threads(1)
    try:
        return _run(landscape, optimizer, starts, steps, lr=lr, schedule=schedule, record_grads=record_grads,
                    dtype=dtype, progress=progress, noise=noise, record_state=record_state, **hyper)
    finally:
        if small and threads > 1:
            torch.set_num_threads(threads)


#: batches with fewer coordinates than this run on one thread: each op on them takes microseconds,
#: and on a busy machine waiting for a second OpenMP thread costs milliseconds (measured: a 4,000
#: element sqrt took 10 us single-threaded and up to 3 ms with 2 threads while other jobs ran)
SINGLE_THREAD_BELOW = 1 << 16


def _run(landscape, optimizer, starts, steps, *, lr, schedule, record_grads, dtype, progress, noise=None,
         record_state=False, **hyper) -> Run:
    land = get_landscape(landscape)
    spec = get_optimizer(optimizer)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    p = _as_points(starts, dtype)
    n = p.shape[0]
    kwargs, group = prepare(spec, n, catalogue.lab_lr(spec, land) if lr is None else lr, hyper, dtype, p.device)
    base_lr = kwargs["lr"]
    lr_factors = schedules.factors(schedule, steps)
    rule = spec.rule
    noisy = gradient_sampler(land, parse_noise(noise), n, dtype, p.device)

    state: dict[str, Any] = {}
    for name, value in rule.init_state(p, group).items():
        state[name] = value.item() if name in rule.scalar_state else value
    if spec.lookahead:
        state["momentum_buffer"] = torch.zeros_like(p)

    path = torch.empty((steps + 1, n, 2), dtype=dtype, device=p.device)
    loss = torch.empty((steps + 1, n), dtype=dtype, device=p.device)
    grads = torch.empty((steps, n, 2), dtype=dtype, device=p.device) if record_grads else None
    states: dict[str, Tensor] | None = {} if record_state else None
    path[0] = p
    for t in range(1, steps + 1):
        if spec.lookahead:
            with torch.no_grad():
                f = land.value(p)
            ahead = p - kwargs["momentum"] * state["momentum_buffer"]
            _, g = land.value_and_grad(ahead)
        else:
            ahead = p
            f, g = land.value_and_grad(p)
        if noisy is not None:
            g = noisy(ahead, g, t)
        loss[t - 1] = f
        if grads is not None:
            grads[t - 1] = g
        kwargs["lr"] = base_lr * lr_factors[t - 1] if lr_factors[t - 1] != 1.0 else base_lr
        extra = {"step": float(t)} if rule.counts_steps else {}
        out = rule.update(p, g, **state, **extra, **kwargs)
        p = out.pop("param")
        state.update(out)
        if states is not None:
            for name, value in state.items():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    states.setdefault(name, torch.zeros((steps, n, 2), dtype=dtype, device=p.device))[t - 1] = value
        path[t] = p
        if progress is not None:
            progress(t)
    with torch.no_grad():
        loss[steps] = land.value(p)
    lr_col = base_lr if isinstance(base_lr, Tensor) else torch.full((n, 1), base_lr, dtype=dtype, device=p.device)
    swept = {k: v.flatten() for k, v in kwargs.items() if isinstance(v, Tensor) and k != "lr"}
    return Run(land, spec, path, loss, lr_col.flatten().clone(), lr_factors, swept, grads, states)


@dataclass
class Sweep:
    """One :class:`Run` per optimizer over the grid ``lrs x starts`` (trajectory ``i * S + j`` has
    ``lrs[i]`` and ``starts[j]``)."""

    runs: dict[str, Run]
    lrs: Tensor
    starts: Tensor

    def grid(self, name: str, values: Tensor) -> Tensor:
        """Reshape per-trajectory ``values`` of optimizer ``name`` to ``(len(lrs), len(starts))``."""
        return values.reshape(len(self.lrs), len(self.starts), *values.shape[1:])


def sweep(landscape: str | Landscape, optimizers: Sequence[str], lrs: Any, starts: Any, steps: int, *,
          schedule: str | None = None, dtype: torch.dtype = torch.float64,
          progress: Callable[[str, int], None] | None = None, **hyper: HyperValue) -> Sweep:
    """Every optimizer over every (learning rate, start) pair: one batched :func:`run` per optimizer."""
    lr_t = torch.as_tensor(lrs, dtype=dtype).flatten()
    pts = _as_points(starts, dtype)
    if lr_t.numel() == 0:
        raise ValueError("lrs must hold at least one learning rate")
    L, S = lr_t.numel(), pts.shape[0]
    all_lr = lr_t.repeat_interleave(S)
    all_starts = pts.repeat(L, 1)
    runs = {}
    for name in optimizers:
        cb = (lambda t, _n=name: progress(_n, t)) if progress else None
        runs[name] = run(landscape, name, all_starts, steps, lr=all_lr, schedule=schedule, dtype=dtype,
                         progress=cb, **hyper)
    return Sweep(runs, lr_t, pts)
