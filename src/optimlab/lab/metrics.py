"""Per-trajectory measurements of a :class:`~optimlab.lab.engine.Run`, all vectorised over N.

Every function takes a path ``(T + 1, N, 2)`` (and losses ``(T + 1, N)`` where needed) and
returns one value per trajectory:

- final loss ``f(w_T)`` and gap ``f(w_T) - f*``;
- nearest known minimum (index) and the distance to it;
- steps to tolerance: the first ``t`` with ``f(w_t) - f* <= tol`` (-1 if never);
- path length ``sum_t |w_t - w_{t-1}|``, displacement ``|w_T - w_0|`` and their ratio;
- oscillation: the number of sign changes of the step ``d_t = w_t - w_{t-1}`` projected on the
  trajectory's principal axis (top eigenvector of ``sum_t d_t d_t^T``); steps shorter than
  ``1e-12`` times the longest are ignored;
- diverged: a non-finite point at any step, or a final point outside the landscape's window;
- escaped the saddle: the loss fell below ``f(saddle) - margin`` (and the step when it first did).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .landscapes import Landscape


def nearest_minimum(points: Tensor, minima: Tensor) -> tuple[Tensor, Tensor]:
    """``(index, distance)`` of the closest of ``minima`` ``(M, 2)`` to each of ``points`` ``(N, 2)``."""
    d = torch.linalg.vector_norm(points[:, None, :] - minima[None, :, :].to(points), dim=-1)
    d = torch.nan_to_num(d, nan=math.inf)
    dist, idx = d.min(dim=1)
    return idx, dist


def steps_to_tolerance(loss: Tensor, f_star: float, tol: float) -> Tensor:
    """First step ``t`` with ``loss[t] - f_star <= tol``; -1 where it never happens."""
    hit = (loss - f_star) <= tol
    first = torch.argmax(hit.to(torch.int8), dim=0)
    return torch.where(hit.any(dim=0), first, torch.full_like(first, -1))


def path_length(path: Tensor) -> Tensor:
    return torch.linalg.vector_norm(path[1:] - path[:-1], dim=-1).sum(dim=0)


def displacement(path: Tensor) -> Tensor:
    return torch.linalg.vector_norm(path[-1] - path[0], dim=-1)


def principal_axis(path: Tensor) -> Tensor:
    """``(N, 2)`` unit vector: the direction along which the steps are largest."""
    d = torch.nan_to_num(path[1:] - path[:-1], nan=0.0, posinf=0.0, neginf=0.0)
    scatter = torch.einsum("tni,tnj->nij", d, d)
    _, vecs = torch.linalg.eigh(scatter)
    return vecs[..., -1]


def oscillation(path: Tensor, axis: Tensor | None = None) -> Tensor:
    """Sign changes of the steps projected on ``axis`` ``(N, 2)`` (default: the principal axis)."""
    if axis is None:
        axis = principal_axis(path)
    d = path[1:] - path[:-1]
    proj = torch.einsum("tni,ni->tn", d, axis.to(d.dtype))
    proj = torch.nan_to_num(proj, nan=0.0, posinf=0.0, neginf=0.0)
    scale = proj.abs().amax(dim=0, keepdim=True)
    sign = torch.sign(torch.where(proj.abs() > 1e-12 * scale, proj, torch.zeros_like(proj)))
    # compare each nonzero sign with the previous nonzero sign, per trajectory (no loop over t:
    # the index of the last nonzero sign before t is a running maximum)
    t = torch.arange(sign.shape[0], device=path.device)[:, None]
    last = torch.cummax(torch.where(sign != 0, t, torch.full_like(t, -1)).expand_as(sign), dim=0).values
    before = torch.cat([torch.full_like(last[:1], -1), last[:-1]])
    previous = torch.where(before >= 0, sign.gather(0, before.clamp(min=0)), torch.zeros_like(sign))
    flip = (sign != 0) & (previous != 0) & (sign != previous)
    return flip.long().sum(dim=0)


def diverged(path: Tensor, landscape: Landscape) -> Tensor:
    finite = torch.isfinite(path).all(dim=-1).all(dim=0)
    return ~finite | ~landscape.in_window(path[-1])


def saddle_escape(loss: Tensor, landscape: Landscape, margin: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(escaped, first_step)`` relative to the landscape's first saddle; (all False, -1) if none."""
    n = loss.shape[1]
    if not landscape.saddles:
        return (torch.zeros(n, dtype=torch.bool, device=loss.device),
                torch.full((n,), -1, dtype=torch.long, device=loss.device))
    f_saddle = float(landscape.value(torch.tensor(landscape.saddles[0], dtype=torch.float64)))
    below = loss < f_saddle - margin
    first = torch.argmax(below.to(torch.int8), dim=0)
    escaped = below.any(dim=0)
    return escaped, torch.where(escaped, first, torch.full_like(first, -1))


def effective_lr(path: Tensor, grads: Tensor) -> Tensor:
    """``|w_t - w_{t-1}| / |g_t|`` per coordinate, ``(T, N, 2)``: the learning rate each coordinate
    actually got (for AdaGrad / RMSProp without momentum this is ``lr / (sqrt(V) + eps)``),
    measured from the run rather than recomputed from a formula. NaN where the gradient is 0."""
    step = (path[1:] - path[:-1]).abs()
    g = grads.abs()
    return torch.where(g > 0, step / torch.where(g > 0, g, torch.ones_like(g)), torch.full_like(g, math.nan))


def measure(run: Any, tol: float = 1e-6, saddle_margin: float = 1.0) -> dict[str, Tensor]:
    """All metrics of a run, each an ``(N,)`` tensor (see the module docstring)."""
    land = run.landscape
    path, loss = run.path, run.loss
    f_star = land.min_value
    idx, dist = nearest_minimum(path[-1], land.minima_tensor(path.dtype))
    length = path_length(path)
    disp = displacement(path)
    escaped, escape_step = saddle_escape(loss, land, saddle_margin)
    return {
        "final_loss": loss[-1],
        "loss_gap": loss[-1] - f_star,
        "nearest_minimum": idx,
        "distance_to_minimum": dist,
        "steps_to_tol": steps_to_tolerance(loss, f_star, tol),
        "path_length": length,
        "displacement": disp,
        "straightness": disp / torch.clamp(length, min=1e-300),
        "oscillation": oscillation(path),
        "diverged": diverged(path, land),
        "escaped_saddle": escaped,
        "steps_to_escape": escape_step,
    }


def rows(run: Any, tol: float = 1e-6, **extra: Any) -> list[dict[str, Any]]:
    """The metrics as one dict per trajectory (Python numbers), ready for a table or CSV."""
    m = measure(run, tol)
    out = []
    for i in range(run.n):
        row = {"optimizer": run.optimizer.name, "landscape": run.landscape.name, "lr": float(run.lr[i]),
               "x0": float(run.path[0, i, 0]), "y0": float(run.path[0, i, 1]),
               "x_final": float(run.path[-1, i, 0]), "y_final": float(run.path[-1, i, 1])}
        for key, value in run.hyper.items():
            row[key] = float(value[i])
        for key, value in m.items():
            v = value[i].item()
            row[key] = bool(v) if value.dtype == torch.bool else v
        row.update(extra)
        out.append(row)
    return out
