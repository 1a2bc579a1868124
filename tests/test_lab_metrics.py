"""Metrics on hand-made trajectories whose answers are known."""

import math

import torch

from optimlab.lab import metrics
from optimlab.lab.engine import Run, get_optimizer
from optimlab.lab.landscapes import LANDSCAPES


def make_run(land_name, paths):
    land = LANDSCAPES[land_name]
    path = torch.tensor(paths, dtype=torch.float64).transpose(0, 1)  # (T+1, N, 2)
    return Run(land, get_optimizer("sgd"), path, land.value(path), torch.full((path.shape[1],), 0.1), [1.0] * (path.shape[0] - 1))


def test_zigzag_counts_sign_changes_on_the_principal_axis():
    # steps along y: +1, -1, +1, -1 (3 sign changes) with a slow drift along x
    zig = [[0.0, 0.0], [0.1, 1.0], [0.2, 0.0], [0.3, 1.0], [0.4, 0.0]]
    straight = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]]
    m = metrics.measure(make_run("bowl", [zig, straight]))
    assert m["oscillation"].tolist() == [3, 0]
    torch.testing.assert_close(m["path_length"], torch.tensor([4 * math.hypot(0.1, 1.0), 4.0], dtype=torch.float64))
    torch.testing.assert_close(m["displacement"], torch.tensor([0.4, 4.0], dtype=torch.float64))
    torch.testing.assert_close(m["straightness"][1], torch.tensor(1.0, dtype=torch.float64))


def test_oscillation_ignores_zero_steps_between_reversals():
    p = [[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]
    assert metrics.oscillation(make_run("bowl", [p]).path).tolist() == [2]


def test_nearest_minimum_and_steps_to_tolerance_on_himmelblau():
    land = LANDSCAPES["himmelblau"]
    m2 = land.minima[2]
    p = [[0.0, 0.0], [-3.0, -3.0], [m2[0] + 1e-4, m2[1]], [m2[0], m2[1]]]
    m = metrics.measure(make_run("himmelblau", [p]), tol=1e-6)
    assert m["nearest_minimum"].item() == 2
    assert m["distance_to_minimum"].item() == 0.0
    assert m["final_loss"].item() < 1e-20
    losses = land.value(torch.tensor(p, dtype=torch.float64))
    expected = next(i for i, f in enumerate(losses.tolist()) if f <= 1e-6)
    assert m["steps_to_tol"].item() == expected
    assert metrics.measure(make_run("himmelblau", [p[:2]]))["steps_to_tol"].item() == -1


def test_diverged_non_finite_or_outside_window():
    ok = [[0.0, 0.0], [1.0, 1.0]]
    nan = [[0.0, 0.0], [math.nan, 1.0]]
    out = [[0.0, 0.0], [10.0, 0.0]]  # outside the window at the end
    inf = [[0.0, 0.0], [0.0, math.inf]]
    m = metrics.measure(make_run("bowl", [ok, nan, out, inf]))
    assert m["diverged"].tolist() == [False, True, True, True]
    went_out_and_back = [[0.0, 0.0], [10.0, 0.0], [0.5, 0.0]]
    assert metrics.measure(make_run("bowl", [went_out_and_back]))["diverged"].tolist() == [False]


def test_saddle_escape():
    stuck = [[1.0, 0.0], [0.5, 0.0], [0.1, 0.001]]
    escapes = [[1.0, 0.0], [0.5, 0.5], [0.1, 1.5], [0.0, 3.0]]
    run = make_run("saddle", [stuck + [stuck[-1]], escapes])
    m = metrics.measure(run)
    assert m["escaped_saddle"].tolist() == [False, True]
    # f(0.1, 1.5) = 0.01 - 2.25 + 0.158 = -2.08 < -1: the first escape is step 2
    assert m["steps_to_escape"].tolist() == [-1, 2]
    assert not metrics.measure(make_run("bowl", [stuck]))["escaped_saddle"].any()


def test_effective_lr_is_step_over_gradient():
    path = torch.tensor([[[0.0, 0.0]], [[0.1, -0.2]], [[0.1, -0.3]]], dtype=torch.float64)
    grads = torch.tensor([[[-1.0, 4.0]], [[0.0, 1.0]]], dtype=torch.float64)
    eff = metrics.effective_lr(path, grads)
    assert eff[0, 0].tolist() == [0.1, 0.05]
    assert math.isnan(eff[1, 0, 0].item())  # zero gradient: undefined
    assert abs(eff[1, 0, 1].item() - 0.1) < 1e-12


def test_rows_are_plain_numbers():
    rows = metrics.rows(make_run("bowl", [[[1.0, 1.0], [0.0, 0.0]]]))
    assert rows[0]["optimizer"] == "sgd" and rows[0]["final_loss"] == 0.0 and rows[0]["diverged"] is False
