"""Smith's LR range test: restores model and optimizer, stops on divergence, suggests a good LR."""

import copy
import math

import numpy as np
import pytest
import torch

from optimlab import SGD, Adagrad, Adam
from optimlab.train import find_lr, get_task, lr_grid, lr_range_test
from optimlab.train.bench import tune
from optimlab.train.lr_finder import suggest
from nested import assert_same


pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(256, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    state = {"i": 0}

    def closure():
        i = state["i"] = (state["i"] + 32) % 256
        return torch.nn.functional.mse_loss(model(x[i:i + 32]), y[i:i + 32])
    return model, closure


@pytest.mark.parametrize("make_opt", [
    lambda p: Adam(p, lr=1e-3),
    lambda p: SGD(p, lr=0.01, momentum=0.9, nesterov=True),
    lambda p: Adagrad(p, lr=0.05),
])
@pytest.mark.parametrize("warm", [False, True])
def test_model_and_optimizer_are_restored(make_opt, warm):
    model, closure = _problem()
    opt = make_opt(model.parameters())
    if warm:  # optimizer with state (moments, step counts) before the test
        for _ in range(5):
            opt.zero_grad()
            closure().backward()
            opt.step()
    params = copy.deepcopy(model.state_dict())
    state = copy.deepcopy(opt.state_dict())
    result = lr_range_test(model, opt, closure, num_steps=60)
    assert len(result.lrs) >= 3
    assert_same(model.state_dict(), params)
    assert_same(opt.state_dict(), state)
    assert all(p.grad is None for p in model.parameters())
    # training continues exactly as if the test had never run
    twin, twin_closure = _problem()
    twin.load_state_dict(params)
    twin_opt = make_opt(twin.parameters())
    twin_opt.load_state_dict(state)
    for m, o, c in ((model, opt, closure), (twin, twin_opt, twin_closure)):
        o.zero_grad()
        torch.nn.functional.mse_loss(m(torch.ones(4, 5)), torch.zeros(4, 1)).backward()
        o.step()
    assert_same(model.state_dict(), twin.state_dict())


def test_restored_even_when_closure_raises():
    model, closure = _problem()
    opt = Adam(model.parameters(), lr=1e-3)
    params = copy.deepcopy(model.state_dict())
    calls = {"n": 0}

    def failing():
        calls["n"] += 1
        if calls["n"] == 10:
            raise RuntimeError("boom")
        return closure()
    with pytest.raises(RuntimeError, match="boom"):
        lr_range_test(model, opt, failing)
    assert_same(model.state_dict(), params)
    assert opt.state_dict()["state"] == {} and opt.param_groups[0]["lr"] == 1e-3


def test_lr_ramp_is_exponential_and_stops_on_divergence():
    model, closure = _problem()
    opt = SGD(model.parameters(), lr=0.1)
    r = lr_range_test(model, opt, closure, start_lr=1e-4, end_lr=1e3, num_steps=120)
    ratios = np.diff(np.log(r.lrs))
    assert np.allclose(ratios, math.log(1e7) / 119)
    assert r.stopped_early and len(r.lrs) < 120
    assert r.smoothed[-1] > 4 * min(r.smoothed) or not math.isfinite(r.losses[-1])
    assert math.isclose(r.lrs[0], 1e-4)


def test_smoothing_is_bias_corrected_ewma():
    model, closure = _problem()
    r = lr_range_test(model, Adam(model.parameters()), closure, num_steps=20, end_lr=1e-3, beta=0.8)
    raw, expected = 0.0, []
    for t, v in enumerate(r.losses, 1):
        raw = 0.8 * raw + 0.2 * v
        expected.append(raw / (1 - 0.8 ** t))
    assert np.allclose(r.smoothed, expected, rtol=1e-12)
    assert r.smoothed[0] == r.losses[0]


def test_suggestion_rules_on_a_known_curve():
    lrs = np.logspace(-6, 1, 141)
    x = np.log10(lrs)
    # falls fastest at 1e-3 (logistic drop), then minimum near 3e-1, then climbs
    loss = 2 - 1 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -0.5, (x + 0.5) ** 2 * 4, 0)
    s = suggest(lrs.tolist(), loss.tolist())
    # steepest: the point of most negative slope per ramp step, the first 10 and last 5 points
    # skipped, by a difference written here (central, one-sided at the trimmed ends): exactly it
    lo, hi = 10, len(loss) - 5
    slope = [(loss[min(i + 1, hi - 1)] - loss[max(i - 1, lo)]) / (min(i + 1, hi - 1) - max(i - 1, lo))
             for i in range(lo, hi)]
    assert s["steepest"] == lrs[lo + int(np.argmin(slope))]
    assert math.isclose(math.log10(s["steepest"]), -3, abs_tol=0.026)  # within half a grid step
    assert math.isclose(s["min/10"], lrs[int(np.argmin(loss))] / 10)
    from optimlab.train.lr_finder import LRFinderResult
    assert not LRFinderResult(lrs.tolist(), loss.tolist(), loss.tolist(), s).min_at_end
    falling = (2 - x / 10).tolist()  # never turns up: the minimum is the last point
    assert LRFinderResult(lrs.tolist(), falling, falling, suggest(lrs.tolist(), falling)).min_at_end


@pytest.mark.parametrize("kwargs, message", [({"start_lr": 0}, "start_lr must be"),
                                             ({"end_lr": 1e-7}, "end_lr must be greater"),
                                             ({"num_steps": 2}, "num_steps must be"),
                                             ({"beta": 1.0}, "beta must be"),
                                             ({"rule": "bogus"}, "rule must be one of")])
def test_bad_arguments_are_named(kwargs, message):
    model, closure = _problem()
    with pytest.raises(ValueError, match=message):
        lr_range_test(model, Adam(model.parameters()), closure, **kwargs)


@pytest.mark.parametrize("task, optimizer", [("digits-mlp", "adam"), ("digits-mlp", "sgd")])
def test_suggestion_within_factor_10_of_best_grid_lr(task, optimizer):
    grid = lr_grid(1e-4, 1.0, 2)
    best, _ = tune(get_task(task), optimizer, grid, steps=400)
    for rule in ("min/10",):
        result = find_lr(task, optimizer, rule=rule)
        ratio = result.suggestion / best.lr
        assert 0.1 <= ratio <= 10, f"{rule}: suggested {result.suggestion:.3g}, best grid lr {best.lr:.3g}"


def test_valley_is_halfway_into_the_longest_decreasing_run():
    from optimlab.train.lr_finder import longest_decrease
    assert longest_decrease([5, 4, 6, 3, 2, 7, 1]) == (0, 6)          # 5 4 3 2 1
    assert longest_decrease([1, 2, 3]) == (0, 0)
    assert longest_decrease([3, 1, 9, 8, 7, 6]) == (2, 5)             # 9 8 7 6 beats 3 1
    # 40 points: trimmed to [4, 35); flat at 1.0 for 4..9, falls strictly over 10..29, rises after
    lrs = np.logspace(-5, 0, 40).tolist()
    loss = [1.0] * 10 + [1.0 - 0.01 * k for k in range(1, 21)] + [1.0 + 0.1 * k for k in range(10)]
    s = suggest(lrs, loss)
    # longest strictly decreasing subsequence of the trimmed curve: one 1.0, then 0.99..0.80 (21 points)
    # -> it spans trimmed indices 0..25 (1.0 at index 0 is the earliest start), halfway: 0 + 25 // 2 = 12
    assert s["valley"] == lrs[4 + 12]
    assert s["min/10"] == lrs[29] / 10
    assert suggest(lrs[:12], loss[:12])["steepest"] is None           # too short once trimmed


def test_flat_and_unfinished_curves_give_no_suggestion_but_a_reason():
    from optimlab.train.lr_finder import LRBand, LRFinderResult
    lrs = np.logspace(-6, 1, 100).tolist()
    falling = np.linspace(2.0, 1.0, 100).tolist()                     # still falling at the end
    r = LRFinderResult(lrs, falling, falling, suggest(lrs, falling))
    assert r.status == "no-turn-up" and r.suggestion is None and "extend end_lr" in r.message
    flat = (1.0 - 0.04 * np.sin(np.linspace(0, 3, 100))).tolist()   # never falls 5%
    r = LRFinderResult(lrs, flat, flat, suggest(lrs, flat))
    assert r.status == "flat" and r.suggestion is None and "inconclusive" in r.message
    bowl = (1 + (np.log10(lrs) + 2) ** 2 / 10).tolist()               # minimum at 1e-2, turns up
    good = LRFinderResult(lrs, bowl, bowl, suggest(lrs, bowl))
    assert good.status == "ok" and math.isclose(good.suggestion, lrs[int(np.argmin(bowl))] / 10)

    def shifted(factor):
        x = (np.log10(lrs) + 2 - math.log10(factor))
        curve = (1 + x ** 2 / 10).tolist()
        return LRFinderResult(lrs, curve, curve, suggest(lrs, curve))
    band = LRBand([shifted(1.0), shifted(100.0), shifted(0.01)])
    median, low, high = band.band()
    assert math.isclose(median, good.suggestion, rel_tol=0.1) and low < median < high
    assert math.isclose(high / low, 1e4, rel_tol=0.2) and "disagree" in band.message
    unfinished = LRFinderResult(lrs, falling, falling, suggest(lrs, falling))
    assert LRBand([unfinished, unfinished, good]).status == "no-turn-up"
    assert LRBand([unfinished, unfinished, good]).suggestion is None
    assert "2 of 3 seeds" in LRBand([unfinished, unfinished, good]).message


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_range_test_under_ddp_averages_the_loss_and_agrees_on_one_suggestion(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lr_finder_problem import batch, model
    worker = Path(__file__).with_name("lr_finder_dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    procs = [subprocess.Popen([sys.executable, str(worker), str(rank), "2", str(tmp_path / "pg"), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for rank in range(2)]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # one curve, one stop, one suggestion on every rank
    # the same test in one process on whole batches: DDP's averaged gradients and the averaged loss
    net = model()
    opt = SGD(net.parameters(), lr=0.1, momentum=0.9)
    step = {"i": 0}

    def closure():
        x, y = batch(step["i"])
        step["i"] += 1
        return torch.nn.functional.mse_loss(net(x), y)
    ref = lr_range_test(net, opt, closure, start_lr=1e-4, end_lr=100.0, num_steps=60)
    assert ranks[0]["lrs"] == ref.lrs and ranks[0]["stopped_early"] == ref.stopped_early
    np.testing.assert_allclose(ranks[0]["losses"], ref.losses, rtol=1e-9)
    assert ranks[0]["suggestions"] == ref.suggestions and ranks[0]["status"] == ref.status
