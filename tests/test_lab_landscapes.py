"""Landscapes: known minima are stationary points with the known values, and local minima."""

import math

import pytest
import torch

from optimlab.lab.landscapes import LANDSCAPES, get_landscape, register_landscape

KNOWN_VALUES = {"bowl": 0.0, "elongated_bowl": 0.0, "rosenbrock": 0.0, "beale": 0.0, "himmelblau": 0.0,
                "rastrigin": 0.0, "ackley": 0.0, "goldstein_price": 3.0, "saddle": -8.0, "monkey_saddle": -6.75}


def test_all_builtins_present():
    assert set(KNOWN_VALUES) | {"shallow_deep"} <= set(LANDSCAPES)


@pytest.mark.parametrize("name", sorted(KNOWN_VALUES))
def test_known_minima_value_and_zero_gradient(name):
    land = LANDSCAPES[name]
    f, g = land.value_and_grad(land.minima_tensor())
    torch.testing.assert_close(f, torch.full_like(f, KNOWN_VALUES[name]), atol=1e-9, rtol=0)
    assert g.abs().max() < 1e-6
    assert land.min_value == pytest.approx(KNOWN_VALUES[name], abs=1e-9)


@pytest.mark.parametrize("name", sorted(LANDSCAPES))
def test_minima_are_local_minima_inside_the_window(name):
    land = LANDSCAPES[name]
    m = land.minima_tensor()
    assert land.in_window(m).all()
    assert land.in_window(torch.tensor(land.start, dtype=torch.float64))
    angles = torch.linspace(0, 2 * math.pi, 17)[:-1]
    ring = 1e-3 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).double()
    around = land.value(m[:, None, :] + ring[None])
    assert (around > land.value(m)[:, None]).all()


def test_shallow_deep_has_a_shallow_local_and_a_deep_global_minimum():
    land = LANDSCAPES["shallow_deep"]
    f, g = land.value_and_grad(land.minima_tensor())
    assert g.abs().max() < 1e-9
    assert f[0] < f[1] - 0.5  # the global minimum is much deeper
    assert land.min_value == pytest.approx(float(f[0]))
    # the barrier between them (the middle root of the derivative) is higher than both
    barrier = torch.tensor([[0.0753, 0.0]], dtype=torch.float64)
    assert land.value(barrier) > f.max()


@pytest.mark.parametrize("name", ["saddle", "monkey_saddle"])
def test_saddles_are_stationary_but_not_minima(name):
    land = LANDSCAPES[name]
    s = torch.tensor(land.saddles, dtype=torch.float64)
    f, g = land.value_and_grad(s)
    assert g.abs().max() < 1e-12
    nearby = torch.tensor([[0.0, 0.1], [0.1, 0.0], [-0.1, 0.0]], dtype=torch.float64)
    assert (land.value(s + nearby) < f).any()


def test_gradient_is_batched_over_any_leading_shape():
    land = LANDSCAPES["rosenbrock"]
    pts = torch.randn(4, 5, 2, dtype=torch.float64)
    f, g = land.value_and_grad(pts)
    assert f.shape == (4, 5) and g.shape == (4, 5, 2)
    x, y = pts[..., 0], pts[..., 1]
    torch.testing.assert_close(g[..., 0], -2 * (1 - x) - 400 * x * (y - x * x))
    torch.testing.assert_close(g[..., 1], 200 * (y - x * x))


def test_register_user_landscape_and_errors():
    name = "test_tilted_bowl"
    try:
        land = register_landscape(name, lambda x, y: (x - 1) ** 2 + 2 * (y + 0.5) ** 2, [(1.0, -0.5)],
                                  ((-3, 3), (-3, 3)), (2.0, 2.0), description="a test bowl")
        assert get_landscape(name) is land
        f, g = land.value_and_grad(land.minima_tensor())
        assert float(f) == 0.0 and g.abs().max() == 0.0
        with pytest.raises(ValueError, match="already registered"):
            register_landscape(name, lambda x, y: x * x + y * y, [(0, 0)], ((-1, 1), (-1, 1)))
        from optimlab.lab.engine import run
        res = run(name, "adam", [2.0, 2.0], 300, lr=0.05)
        assert torch.linalg.vector_norm(res.final[0] - torch.tensor([1.0, -0.5], dtype=torch.float64)) < 1e-2
    finally:
        LANDSCAPES.pop(name, None)
    with pytest.raises(ValueError, match="window"):
        register_landscape("bad_window", lambda x, y: x, [(0, 0)], ((1, -1), (0, 1)))
    with pytest.raises(ValueError, match="did you mean 'himmelblau'"):
        get_landscape("himmelbau")
