"""The (lr, beta) stability / speed map, and the routes of the formula landscape and the map.

In the spirit of Distill's "Why Momentum Really Works" convergence diagram: for one optimizer
with a beta (``momentum`` for Momentum and NAG, ``beta1`` for Adam), every cell of a grid of
learning rates (log-spaced) x betas (linear) is one trajectory from the same start, and the map
shows how many steps each takes to reach ``f - f* <= tol``, which never do, and which diverge.

The whole grid is ONE call of :func:`optimlab.lab.engine.run`: the cells are the batch, and the
learning rate and the beta are per-trajectory ``(N, 1)`` tensors (:mod:`optimlab.lab.hyper`).
Steps to tolerance and divergence are :func:`optimlab.lab.metrics.steps_to_tolerance` and
:func:`~optimlab.lab.metrics.diverged`, the definitions ``/api/run``'s metrics use, so a cell
equals the single run at its (lr, beta) (tested in ``tests/test_web_formula_stability.py``): the
same steps to tolerance and divergence; the same numbers bit for bit for Momentum and NAG (lr
and beta enter by multiplication); for Adam to the last bit or so (its bias correction
``1 - beta1**t`` is torch's vectorised pow on the beta column, Python's pow in a single run:
they differ in the last bit in about 1% of cases).

Routes (added to the app by :func:`add_routes`)::

    POST /api/formula     a formula landscape: its facts, default lrs and grid (lab_schemas.FormulaRequest)
    POST /api/stability   the map (lab_schemas.StabilityRequest), admitted like a run, within the time budget
"""

from __future__ import annotations

import time
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import Response

from .. import _json, catalogue
from ..lab import engine, metrics
from .compute import (ApiError, BudgetExceeded, budget, dumps, one_thread, over_budget, request_landscape,
                      result_json)
from .custom import FormulaError, formula_info
from .lab_schemas import FormulaRequest, FormulaResponse, StabilityRequest, StabilityResponse, beta_knob
from .schemas import LR_RANGE, ErrorResponse, Limits, knobs, rule_cost

#: the default beta axis; an optimizer with a look-ahead (NAG) starts above 0 (it needs momentum)
DEFAULT_BETAS = (0.0, 0.99)
LOOKAHEAD_BETA_MIN = 0.01


def _round(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def axes(req: StabilityRequest, land: Any) -> tuple[list[float], list[float]]:
    """The map's learning rates (log-spaced, 3 significant digits: values a person types) and betas
    (linear, 4 digits)."""
    spec = engine.get_optimizer(req.optimizer.name)
    default = catalogue.lab_lr(spec, land)
    lo = req.lr_min if req.lr_min is not None else default / 100
    hi = req.lr_max if req.lr_max is not None else min(default * 10, LR_RANGE[1])
    if not lo < hi:
        raise ApiError(422, f"lr_min must be < lr_max, got {lo:g} and {hi:g}")
    lrs = [_round(float(v), 3) for v in torch.logspace(torch.log10(torch.tensor(lo, dtype=torch.float64)),
                                                          torch.log10(torch.tensor(hi, dtype=torch.float64)),
                                                          req.n_lr, dtype=torch.float64)]
    b_lo = req.beta_min if req.beta_min is not None else (LOOKAHEAD_BETA_MIN if spec.lookahead else DEFAULT_BETAS[0])
    b_hi = req.beta_max if req.beta_max is not None else DEFAULT_BETAS[1]
    if not b_lo < b_hi:
        raise ApiError(422, f"beta_min must be < beta_max, got {b_lo:g} and {b_hi:g}")
    if spec.lookahead and b_lo <= 0:
        raise ApiError(422, f"{spec.name} needs beta_min > 0 (its look-ahead needs momentum), got {b_lo:g}")
    betas = [_round(float(v), 4) for v in torch.linspace(b_lo, b_hi, req.n_beta, dtype=torch.float64)]
    for name, values in (("learning rates", lrs), ("betas", betas)):
        if len(set(values)) != len(values):
            raise ApiError(422, f"the range of {name} is too narrow for {len(values)} distinct values; "
                                "widen it or ask for fewer")
    return lrs, betas


def work(req: StabilityRequest) -> int:
    """``cells x steps x rule cost``: what :attr:`Limits.max_map_work` bounds."""
    return req.n_lr * req.n_beta * req.steps * rule_cost(req.optimizer.name)


def check_map_limits(req: StabilityRequest, limits: Limits) -> None:
    if req.steps > limits.max_steps:
        raise ValueError(f"steps must be <= {limits.max_steps} on this server, got {req.steps}")
    for name in ("n_lr", "n_beta"):
        if getattr(req, name) > limits.max_map_side:
            raise ValueError(f"{name} must be <= {limits.max_map_side} on this server, got {getattr(req, name)}")
    if work(req) > limits.max_map_work:
        raise ValueError(f"cells x steps = {req.n_lr * req.n_beta} x {req.steps} (x{rule_cost(req.optimizer.name)} for "
                         f"{req.optimizer.name}) is more than this server's {limits.max_map_work}; "
                         "ask for fewer steps or a smaller grid")


def stability_map(req: StabilityRequest, limits: Limits, deadline: float | None = None) -> dict[str, Any]:
    """The map of ``req`` (see the module docstring); :class:`ApiError` (422) past ``deadline``."""
    t0 = time.perf_counter()
    deadline, check = budget(limits, deadline)
    land = request_landscape(req)
    spec = engine.get_optimizer(req.optimizer.name)
    knob = beta_knob(spec.name)
    lrs, betas = axes(req, land)
    start = list(req.start) if req.start is not None else list(land.start)
    hyper = {k: v for k, v in req.optimizer.hyper().items() if k != knob}
    n_lr, n_beta = len(lrs), len(betas)
    n = n_lr * n_beta
    # cell (row i, column j) is trajectory i * n_lr + j: beta i, learning rate j
    lr_t = torch.tensor(lrs, dtype=torch.float64).repeat(n_beta)
    beta_t = torch.tensor(betas, dtype=torch.float64).repeat_interleave(n_lr)
    starts = torch.tensor([start], dtype=torch.float64).expand(n, 2).clone()
    with one_thread():
        try:
            run = engine.run(land, spec, starts, req.steps, lr=lr_t, schedule=req.schedule, progress=check,
                             **{knob: beta_t}, **hyper)
        except BudgetExceeded:
            raise ApiError(422, f"the map took longer than this server's time budget of {limits.time_budget_s:g} s; "
                                "ask for fewer steps or a smaller grid") from None
        except (ValueError, TypeError) as exc:
            raise ApiError(422, f"{spec.name}: {exc}") from None
        f_star = land.min_value
        reached = metrics.steps_to_tolerance(run.loss, f_star, req.tol)
        diverged = metrics.diverged(run.path, land)
        gap = run.loss[-1] - f_star
    kwargs, _ = engine.prepare(spec, 1, lrs[0], hyper, torch.float64)
    used = {k: float(kwargs[k]) for k in knobs(spec.name) if k != knob and k in kwargs}
    grid = lambda t: t.reshape(n_beta, n_lr)  # noqa: E731
    return {"landscape": land.name, "optimizer": spec.name, "label": spec.label, "colour": spec.colour, "knob": knob,
            "hyper": used, "start": start, "steps": req.steps, "schedule": req.schedule, "tol": req.tol,
            "f_star": f_star, "lrs": lrs, "betas": betas, "steps_to_tol": grid(reached).tolist(),
            "diverged": grid(diverged).tolist(), "loss_gap": _json.finite(grid(gap)),
            "elapsed_s": time.perf_counter() - t0}


def stability_json(req: StabilityRequest, limits: Limits, deadline: float, queued_s: float) -> str:
    """:func:`stability_map` as JSON text (run in a worker thread or process)."""
    return result_json(stability_map, req, limits, deadline, queued_s)


def formula_json(req: FormulaRequest, limits: Limits, deadline: float, queued_s: float) -> str:
    """The formula landscape's facts and grid as JSON text (a 422 where the formula is refused)."""
    try:
        text = dumps(formula_info(req.formula, req.window, req.resolution))
    except FormulaError as exc:
        raise ApiError(422, f"formula: {exc}", [{"field": "formula", "message": str(exc)}]) from None
    over_budget(deadline, limits)
    return text


def add_routes(app: FastAPI, limits: Limits, admission: Any, executor: list[Any], errors: dict) -> None:
    """``POST /api/formula`` and ``POST /api/stability`` on ``app`` (called by ``create_app``)."""

    @app.post("/api/formula", response_model=None, responses={200: {"model": FormulaResponse}, **errors})
    async def api_formula(req: FormulaRequest, request: Request) -> Response:
        """A formula landscape (``landscape: "custom"`` in ``/api/run``): its facts, each optimizer's
        default lr on it, and its grid. A refused formula gets a 422 naming the problem."""
        if req.resolution > limits.max_grid:
            raise ApiError(422, f"resolution must be an integer in [10, {limits.max_grid}], got {req.resolution}",
                           [{"field": "resolution", "message": f"must be in [10, {limits.max_grid}]"}])
        # building it (grid check, minima) takes up to a second: admitted like a light run
        text = await admission.compute(request, limits.light_cost, executor, formula_json, req)
        return Response(content=text, media_type="application/json")

    @app.post("/api/stability", response_model=None,
              responses={200: {"model": StabilityResponse}, 404: {"model": ErrorResponse}, **errors})
    async def api_stability(req: StabilityRequest, request: Request) -> Response:
        """Steps to tolerance over (lr, beta) for one optimizer, one batched engine run."""
        try:
            check_map_limits(req, limits)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        text = await admission.compute(request, work(req), executor, stability_json, req)
        return Response(content=text, media_type="application/json")


__all__ = ["stability_map", "stability_json", "formula_json", "add_routes", "axes", "work", "check_map_limits"]
