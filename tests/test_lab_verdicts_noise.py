"""The verdict method (optimlab.lab.verdicts) and noisy gradients (optimlab.lab.noise)."""

import math

import numpy as np
import pytest
import torch

from optimlab.lab import verdicts as V
from optimlab.lab.engine import run
from optimlab.lab.noise import Noise, parse_noise
from optimlab.lab.sampled import DATA_LANDSCAPES, gradient_sampler


# --------------------------------------------------------------------------------------- verdicts

def test_decide_reads_only_the_interval():
    assert V.decide(0.1, 0.3) == "holds"
    assert V.decide(-0.3, -0.1) == "does not hold"
    assert V.decide(-0.1, 0.3) == "inconclusive"
    assert V.decide(0.0, 0.0) == "inconclusive"          # a tie is never a verdict
    assert V.decide(-0.3, -0.1, direction="<") == "holds"
    assert V.decide(-0.5, 0.5, threshold=1.0, direction="within") == "holds"
    assert V.decide(1.5, 2.0, threshold=1.0, direction="within") == "does not hold"
    assert V.decide(0.5, 1.5, threshold=1.0, direction="within") == "inconclusive"
    with pytest.raises(ValueError, match="direction"):
        V.decide(0, 1, direction="=")


def test_bootstrap_is_deterministic_and_matches_a_direct_computation():
    x = np.random.default_rng(0).normal(1.0, 2.0, 300)
    mean, low, high = V.bootstrap_mean(x)
    assert (mean, low, high) == V.bootstrap_mean(x)
    rng = np.random.default_rng(V.BOOTSTRAP_SEED)
    means = x[rng.integers(0, x.size, (V.BOOTSTRAP_RESAMPLES, x.size))].mean(1)
    assert low == pytest.approx(np.quantile(means, 0.025), abs=1e-12)
    assert high == pytest.approx(np.quantile(means, 0.975), abs=1e-12)
    # about the normal-theory interval
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert low == pytest.approx(mean - 1.96 * se, abs=0.3 * se)
    with pytest.raises(ValueError, match="finite"):
        V.bootstrap_mean([1.0, math.inf])


def test_ratio_of_medians_known_answers_and_pairing():
    b = np.random.default_rng(1).uniform(22.0, 41.0, 30)  # a swinging machine, round by round
    assert V.bootstrap_ratio_of_medians(2 * b, b) == (2.0, 2.0, 2.0)  # every resample: exactly 2
    r, low, high = V.bootstrap_ratio_of_medians(b, b[::-1].copy())  # the same values, pairs broken
    assert r == 1.0 and low < 0.9 and high > 1.1  # unpaired rounds: the swing shows in the interval
    assert V.bootstrap_ratio_of_medians([3.0], [2.0]) == (1.5, 1.5, 1.5)
    x = np.arange(1.0, 31.0)
    ratio, low, high = V.bootstrap_ratio_of_medians(x, x + 1)
    rng = np.random.default_rng(V.BOOTSTRAP_SEED)  # the same computation written out
    idx = rng.integers(0, 30, (V.BOOTSTRAP_RESAMPLES, 30))
    direct = np.quantile(np.median(x[idx], 1) / np.median(x[idx] + 1, 1), [0.025, 0.975])
    assert ratio == 15.5 / 16.5 and (low, high) == (direct[0], direct[1])
    assert (ratio, low, high) == V.bootstrap_ratio_of_medians(x, x + 1)  # seeded
    for a, bad, msg in (([1.0, 2.0], [1.0], "pair up"), ([], [], "pair up"), ([1.0], [0.0], "> 0"),
                        ([math.nan], [1.0], "finite"), ([1.0], [math.inf], "finite")):
        with pytest.raises(ValueError, match=msg):
            V.bootstrap_ratio_of_medians(a, bad)
    with pytest.raises(ValueError, match="level"):
        V.bootstrap_ratio_of_medians(x, x, level=1.0)


@pytest.mark.parametrize("shared, own", [(0.0, 0.2), (0.1, 0.1)])
def test_ratio_of_medians_interval_covers_the_true_ratio(shared, own):
    """Simulated experiments of 30 rounds: log-times normal, so each side's median is known
    (exp(mu)); the true ratio is 1.3. ``shared`` is a per-round factor both sides see (bandwidth
    swings between rounds), ``own`` each sample's own noise. The 95% interval must contain 1.3 in
    roughly 90-99% of 200 experiments (seeded; the percentile interval of a median is a little
    conservative: about 0.99 with shared = 0.3, measured over 600 experiments)."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        z = rng.normal(0, shared, 30)
        a = np.exp(math.log(1.3) + z + rng.normal(0, own, 30))
        b = np.exp(z + rng.normal(0, own, 30))
        _, low, high = V.bootstrap_ratio_of_medians(a, b)
        hits += low <= 1.3 <= high
    assert 0.90 <= hits / 200 <= 0.995


def test_wilson_interval_known_value():
    p, low, high = V.wilson(15, 30)
    assert p == 0.5 and low == pytest.approx(0.3315, abs=1e-4) and high == pytest.approx(0.6685, abs=1e-4)


def test_a_tie_between_two_optimizers_is_inconclusive():
    a = np.array([1, 0, 1, 0] * 30, float)
    c = V.paired_claim("x", a, a, hypothesis="h", metric="m", population="p")
    assert c.verdict == "inconclusive" and c.low == c.high == 0


def test_fewer_than_100_runs_need_a_reason():
    with pytest.raises(ValueError, match="why_n"):
        V.mean_claim("x", np.ones(10), hypothesis="h", metric="m", population="p")
    c = V.mean_claim("x", np.arange(10.0), hypothesis="h", metric="m", population="p", why_n="ten seeds")
    assert c.n == 10 and c.verdict == "holds"


def test_where_holds_counts_settings_and_ties():
    w = V.where_holds([0.2, 0.0, -0.1, 0.3])
    assert w == {"settings": 4, "holds_in": 2, "ties": 1, "fraction": 0.5}


# --------------------------------------------------------------------------------------- noise

def test_parse_noise_round_trip_and_errors():
    n = parse_noise("sd=0.5,batch=8,seed=3")
    assert n == Noise(0.5, 8, 3) and parse_noise(n.spec()) == n
    assert parse_noise(None) is None and parse_noise("none") is None
    for bad, msg in (("sd=-1", "sd"), ("batch=0", "batch"), ("lr=1", "sd=NUMBER"), ("sd=x", "number")):
        with pytest.raises(ValueError, match=msg):
            parse_noise(bad)
    with pytest.raises(ValueError, match="data landscape"):
        run("rosenbrock", "sgd", [0.0, 0.0], 3, lr=0.01, noise="batch=1")


def test_full_batch_is_the_noise_free_run():
    starts = torch.tensor([[-2.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    a = run("least_squares", "adam", starts, 20, lr=0.1, noise="batch=200,seed=1")
    b = run("least_squares", "adam", starts, 20, lr=0.1)
    assert torch.allclose(a.path, b.path, rtol=0, atol=1e-12)


def test_stochastic_gradient_is_one_example_and_each_epoch_uses_every_example_once():
    land = DATA_LANDSCAPES["least_squares"]
    A, b = land.features.numpy(), land.targets.numpy()
    N = land.n_data
    pts = torch.tensor([[0.3, -0.2], [1.0, 2.0]], dtype=torch.float64)
    sample = gradient_sampler(land, Noise(batch=1, seed=4), 2)
    seen = [[], []]
    for t in range(1, N + 1):
        g = sample(pts, land.grad(pts), t).numpy()
        for i in range(2):
            w = pts[i].numpy()
            per = A * (A @ w - b)[:, None]           # every example's gradient, numpy
            k = int(np.argmin(np.abs(per - g[i]).sum(1)))
            assert np.allclose(per[k], g[i], atol=1e-12)
            seen[i].append(k)
    assert sorted(seen[0]) == list(range(N)) and sorted(seen[1]) == list(range(N))
    assert seen[0] != seen[1]                        # each trajectory its own order


def test_additive_noise_is_seeded_and_has_the_declared_sd():
    start = torch.zeros(4000, 2, dtype=torch.float64)
    a = run("bowl", "sgd", start, 1, lr=1.0, noise="sd=0.7,seed=2", record_grads=True)
    b = run("bowl", "sgd", start, 1, lr=1.0, noise="sd=0.7,seed=2", record_grads=True)
    assert torch.equal(a.path, b.path)
    assert float(a.grads.std()) == pytest.approx(0.7, rel=0.05)   # the gradient at 0 is 0: all noise
    assert not torch.equal(a.path, run("bowl", "sgd", start, 1, lr=1.0, noise="sd=0.7,seed=3").path)


def test_data_landscape_minimum_is_the_least_squares_solution():
    for land in DATA_LANDSCAPES.values():
        A, b = land.features.numpy(), land.targets.numpy()
        sol = np.linalg.solve(A.T @ A, A.T @ b)
        assert np.allclose(land.minima[0], sol, atol=1e-10)
        w = torch.tensor([0.7, -0.4], dtype=torch.float64)
        assert float(land.value(w)) == pytest.approx(0.5 * np.mean((A @ w.numpy() - b) ** 2), rel=1e-12)


def test_cli_noise_option():
    from optimlab.cli import build_parser

    args = build_parser().parse_args(["compare", "--landscape", "least_squares", "--noise", "batch=1,seed=4"])
    assert args.noise == Noise(batch=1, seed=4)
    assert build_parser().parse_args(["sweep", "--noise", "sd=0.5"]).noise == Noise(sd=0.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--noise", "batch=0"])
