"""The web lab's fast path: the engine's numbers bit for bit, and an independent NumPy check.

``optimlab.web.fastpath`` runs a whole trajectory as generated float code read off the landscape
(reverse mode in autograd's order) and the rule (traced); these tests hold it to
``optimlab.lab.engine.run`` exactly (every landscape x every lab optimizer, schedules, diverging
learning rates, 1 and 8 starts), and hold what ``/api/run`` sends to the float64 NumPy references
of ``tests/reference.py`` (written from the formulas, nothing imported from optimlab) with the
landscapes' gradients written out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import reference
from optimlab import catalogue
from optimlab.lab import LANDSCAPES, engine
from optimlab.web import create_app, fastpath

pytestmark = pytest.mark.skipif(bool(fastpath.available()), reason=f"fast path unavailable: {fastpath.available()}")


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    return bool(torch.equal(fa, fb) and torch.equal(a[fa], b[fb]))


def starts_for(name: str, n: int, seed: int) -> list[list[float]]:
    (x0, x1), (y0, y1) = LANDSCAPES[name].window
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    pts = torch.stack([x0 + u[:, 0] * (x1 - x0), y0 + u[:, 1] * (y1 - y0)], 1).tolist()
    return [list(LANDSCAPES[name].start)] + pts[1:]


#: lab optimizers whose rules the tracer does not model (a branch on a traced value: RAdam's rho_t > 5,
#: ASGD's mu == 1, Schedule-Free's weight_sum != 0; torch.sign: Rprop, Lion): the page runs the engine
ENGINE_ONLY = {"radam", "asgd", "rprop", "lion", "sgd-schedule-free", "adamw-schedule-free"}


def test_the_optimizers_without_a_fast_path_are_the_known_ones_and_fall_back():
    starts = starts_for("bowl", 2, 0)
    for spec in catalogue.lab_entries():
        if spec.name in ENGINE_ONLY:
            with pytest.raises(fastpath.Unsupported):
                fastpath._run("bowl", spec.name, starts, 5, lr=None, schedule=None)
            assert torch.equal(fastpath.run("bowl", spec.name, starts, 5).path, engine.run("bowl", spec.name, starts, 5).path)
        else:
            fastpath._run("bowl", spec.name, starts, 5, lr=None, schedule=None)


@pytest.mark.parametrize("landscape", list(LANDSCAPES))
def test_every_optimizer_on_every_landscape_is_the_engine_bit_for_bit(landscape):
    starts = starts_for(landscape, 3, 0)
    for spec in catalogue.lab_entries():
        if spec.name in ENGINE_ONLY:
            continue
        name, lr0 = spec.name, catalogue.lab_lr(spec, landscape)
        # the default lr, and 30x it (most of these diverge: inf and nan must match too)
        for lr, schedule in ((lr0, None), (lr0 * 30, "warmup-cosine:5")):
            ref = engine.run(landscape, name, starts, 40, lr=lr, schedule=schedule)
            got = fastpath._run(landscape, name, starts, 40, lr=lr, schedule=schedule)  # no silent fallback
            assert same(got.path, ref.path) and same(got.loss, ref.loss), (landscape, name, lr)
            assert torch.equal(got.lr, ref.lr) and got.lr_factors == ref.lr_factors


def test_changed_knobs_and_eight_starts_are_the_engine_bit_for_bit():
    for landscape in ("rastrigin", "ackley", "saddle", "goldstein_price"):
        starts = starts_for(landscape, 8, 1)
        for name, hyper in (("adam", {"beta1": 0.7, "beta2": 0.95, "eps": 1e-4}), ("rmsprop", {"alpha": 0.5}),
                            ("nag", {"momentum": 0.5}), ("nadam", {"beta1": 0.8}), ("momentum-ewma", {"momentum": 0.99})):
            ref = engine.run(landscape, name, starts, 30, **hyper)
            got = fastpath._run(landscape, name, starts, 30, lr=None, schedule=None, **hyper)
            assert same(got.path, ref.path) and same(got.loss, ref.loss), (landscape, name)


def test_what_the_fast_path_does_not_model_runs_the_engine():
    lr = torch.tensor([0.01, 0.02], dtype=torch.float64)   # per-trajectory lr: the engine's sweep
    with pytest.raises(fastpath.Unsupported):
        fastpath._run("bowl", "adam", [[1.0, 1.0], [2.0, 0.5]], 5, lr=lr, schedule=None)
    got = fastpath.run("bowl", "adam", [[1.0, 1.0], [2.0, 0.5]], 5, lr=lr)
    assert same(got.path, engine.run("bowl", "adam", [[1.0, 1.0], [2.0, 0.5]], 5, lr=lr).path)
    # a landscape using something the tracer lacks (torch.clamp) is the engine's too
    land = LANDSCAPES["bowl"].__class__("clamped", lambda x, y: torch.clamp(x, min=-1.0) ** 2 + y * y,
                                        ((0.0, 0.0),), ((-3.0, 3.0), (-3.0, 3.0)), (2.0, 1.0))
    with pytest.raises(fastpath.Unsupported):
        fastpath._run(land, "sgd", [[2.0, 1.0]], 5, lr=0.1, schedule=None)
    assert same(fastpath.run(land, "sgd", [[2.0, 1.0]], 5, lr=0.1).path, engine.run(land, "sgd", [[2.0, 1.0]], 5, lr=0.1).path)


# --- independent check: what /api/run sends against tests/reference.py --------------------------

def grad_elongated(p: np.ndarray, t: int) -> np.ndarray:          # f = 0.05 x^2 + 5 y^2
    return np.array([0.1 * p[0], 10.0 * p[1]])


def grad_rosenbrock(p: np.ndarray, t: int) -> np.ndarray:         # f = (1 - x)^2 + 100 (y - x^2)^2
    x, y = p
    return np.array([-2.0 * (1 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])


def grad_rastrigin(p: np.ndarray, t: int) -> np.ndarray:          # 20 + sum x^2 - 10 cos(2 pi x)
    return 2.0 * p + 20.0 * math.pi * np.sin(2.0 * math.pi * p)


def nag_w(w0: np.ndarray, steps: int, lr: float, beta: float = 0.9) -> np.ndarray:
    """The seed's NAG in the variable the lab draws, ``w`` (``reference.ref_nag_lookahead`` returns
    the look-ahead point ``w - beta * v``): look = w - b v; v = b v + lr grad(look); w = w - v."""
    w, v = w0.astype(np.float64).copy(), np.zeros(2)
    for t in range(1, steps + 1):
        v = beta * v + lr * reference.grad_fn(w - beta * v, t)
        w = w - v
    return w


REFS = {
    "sgd": lambda p0, n, lr: reference.ref_sgd(p0, n, lr),
    "momentum": lambda p0, n, lr: reference.ref_sgd(p0, n, lr, momentum=0.9),
    "nag": nag_w,
    "adagrad": lambda p0, n, lr: reference.ref_adagrad(p0, n, lr),
    "rmsprop": lambda p0, n, lr: reference.ref_rmsprop(p0, n, lr),
    "adam": lambda p0, n, lr: reference.ref_adam(p0, n, lr),
    "nadam": lambda p0, n, lr: reference.ref_nadam(p0, n, lr),
    "adam-nobc": lambda p0, n, lr: reference.ref_adam(p0, n, lr, bias_correction=False),
    "adagrad-seed": lambda p0, n, lr: reference.ref_adagrad(p0, n, lr, eps_inside_sqrt=True),
}


@pytest.mark.parametrize("landscape,grad,start,lr_scale", [
    ("elongated_bowl", grad_elongated, [-9.0, 2.0], 1.0),
    ("rosenbrock", grad_rosenbrock, [-1.2, 1.0], 0.5),
    ("rastrigin", grad_rastrigin, [0.3, -0.2], 0.1),
])
def test_api_numbers_match_the_numpy_references(monkeypatch, landscape, grad, start, lr_scale):
    monkeypatch.setattr(reference, "grad_fn", grad)
    steps = 60
    body = {"landscape": landscape, "starts": [start], "steps": steps,
            "optimizers": [{"name": n, "lr": catalogue.get(n).lab_lr * lr_scale} for n in REFS]}
    with TestClient(create_app()) as c:
        out = c.post("/api/run", json=body).json()
    for entry, run in zip(body["optimizers"], out["runs"]):
        want = REFS[entry["name"]](np.array(start), steps, entry["lr"])
        got = np.array(run["path"][-1][0], dtype=np.float64)
        assert np.all(np.isfinite(want)), entry
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=str(entry))
