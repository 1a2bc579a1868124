"""The EWMA utility: the seed's recursion, its expansion, and bias correction."""

import pytest
import torch

from optimlab import EWMA, ewma_series


def test_matches_the_seed_recursion_and_expansion():
    beta, xs = 0.9, [3.0, 5.0, 4.0, 8.0]
    avg = EWMA(beta, bias_correction=False)
    v = 0.0
    for x in xs:
        v = beta * v + (1 - beta) * x
        assert avg.update(x) == pytest.approx(v)
    # V_t = (1-b) x_t + b(1-b) x_{t-1} + b^2 (1-b) x_{t-2} + ... (the seed's expansion, V_0 = 0)
    expansion = sum((1 - beta) * beta ** k * x for k, x in enumerate(reversed(xs)))
    assert avg.value == pytest.approx(expansion)


def test_bias_correction_removes_the_pull_towards_zero():
    raw, corrected = EWMA(0.9, bias_correction=False), EWMA(0.9)
    for _ in range(3):
        r, c = raw.update(10.0), corrected.update(10.0)
    assert r == pytest.approx(10.0 * (1 - 0.9 ** 3))
    assert c == pytest.approx(10.0)  # a constant stream is estimated exactly from the first step


def test_tensors_and_series():
    avg = EWMA(0.5)
    avg.update(torch.tensor([2.0, 4.0]))
    out = avg.update(torch.tensor([4.0, 8.0]))
    # raw: 0.5*[1,2] + 0.5*[4,8] = [2.5, 5]; corrected by 1 - 0.25
    torch.testing.assert_close(out, torch.tensor([2.5, 5.0]) / 0.75)
    series = ewma_series([1.0, 1.0, 1.0], beta=0.9)
    torch.testing.assert_close(series, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("beta", [-0.1, 1.0, 2.0])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        EWMA(beta)


def test_shape_change_and_empty_value_are_errors():
    avg = EWMA(0.9)
    with pytest.raises(ValueError, match="before the first update"):
        avg.value
    avg.update(torch.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        avg.update(torch.zeros(3))
