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
    # steepest: the grid point of most negative slope d loss / d log lr up to the minimum, by a
    # central difference written here (one-sided at the ends), exactly that grid value
    end = int(np.argmin(loss))
    slope = [(loss[min(i + 1, end)] - loss[max(i - 1, 0)]) / (x[min(i + 1, end)] - x[max(i - 1, 0)])
             for i in range(end + 1)]
    assert s["steepest"] == lrs[int(np.argmin(slope))]
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
                                             ({"rule": "valley"}, "rule must be one of")])
def test_bad_arguments_are_named(kwargs, message):
    model, closure = _problem()
    with pytest.raises(ValueError, match=message):
        lr_range_test(model, Adam(model.parameters()), closure, **kwargs)


@pytest.mark.parametrize("task, optimizer", [("digits-mlp", "adam"), ("digits-mlp", "sgd")])
def test_suggestion_within_factor_10_of_best_grid_lr(task, optimizer):
    grid = lr_grid(1e-4, 1.0, 2)
    best, _ = tune(get_task(task), optimizer, grid, steps=400)
    for rule in ("min/10", "steepest"):
        result = find_lr(task, optimizer, rule=rule)
        ratio = result.suggestion / best.lr
        assert 0.1 <= ratio <= 10, f"{rule}: suggested {result.suggestion:.3g}, best grid lr {best.lr:.3g}"
