"""Every rule and seed form against the independent float64 references in reference.py."""

import numpy as np
import pytest
import torch

import optimlab
from reference import (grad_fn, ref_adagrad, ref_adam, ref_nadam, ref_nag_lookahead, ref_rmsprop,
                       ref_sgd)

from stepping import P0, STEPS, assert_close, run_on_reference_gradients  # noqa: E402


def run_optimlab(cls, steps=STEPS, p0=P0, **kwargs):
    return run_on_reference_gradients(cls, steps, p0, **kwargs)[1].detach().numpy()


SGD_CASES = [
    dict(lr=0.05),
    dict(lr=0.05, weight_decay=0.1, maximize=False),
    dict(lr=0.02, momentum=0.9),
    dict(lr=0.02, momentum=0.9, dampening=0.3),
    dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9, momentum_form="ewma"),
    dict(lr=0.05, momentum=0.8, momentum_form="ewma", nesterov=True),
    dict(lr=0.02, momentum=0.9, momentum_form="lr_in_velocity"),
    dict(lr=0.02, momentum=0.9, momentum_form="lr_in_velocity", nesterov=True, weight_decay=0.01),
]


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=str)
def test_sgd_forms_match_reference(kwargs):
    assert_close(run_optimlab(optimlab.SGD, **kwargs), ref_sgd(P0, STEPS, **kwargs))


def test_sgd_maximize_climbs():
    got = run_optimlab(optimlab.SGD, lr=0.01, momentum=0.5, maximize=True)
    assert_close(got, ref_sgd(P0, STEPS, lr=0.01, momentum=0.5, maximize=True))


def test_nesterov_lr_in_velocity_is_the_seeds_lookahead_nag():
    """optimlab's Nesterov step tracks the seed's look-ahead point w - b*v exactly."""
    got = run_optimlab(optimlab.SGD, lr=0.02, momentum=0.9, nesterov=True, momentum_form="lr_in_velocity")
    assert_close(got, ref_nag_lookahead(P0, STEPS, lr=0.02, momentum=0.9))


def test_torch_and_lr_in_velocity_forms_agree_at_constant_lr_and_part_under_a_schedule():
    same_a = run_optimlab(optimlab.SGD, lr=0.02, momentum=0.9)
    same_b = run_optimlab(optimlab.SGD, lr=0.02, momentum=0.9, momentum_form="lr_in_velocity")
    np.testing.assert_allclose(same_a, same_b, rtol=1e-12, atol=1e-12)

    lrs = [0.04 * 0.9 ** t for t in range(STEPS)]
    runs = {}
    for form in ("torch", "lr_in_velocity"):
        p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
        opt = optimlab.SGD([p], lr=lrs[0], momentum=0.9, momentum_form=form)
        for t in range(1, STEPS + 1):
            opt.param_groups[0]["lr"] = lrs[t - 1]
            p.grad = torch.from_numpy(grad_fn(p.detach().numpy(), t))
            opt.step()
        runs[form] = p.detach().numpy()
        assert_close(runs[form], ref_sgd(P0, STEPS, lr=None, momentum=0.9, momentum_form=form, lrs=lrs))
    assert np.abs(runs["torch"] - runs["lr_in_velocity"]).max() > 1e-3


ADAGRAD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.3),
    dict(lr=0.1, eps_inside_sqrt=True),
    dict(lr=0.1, eps=1e-2, eps_inside_sqrt=True, maximize=True),
]


@pytest.mark.parametrize("kwargs", ADAGRAD_CASES, ids=str)
def test_adagrad_matches_reference(kwargs):
    assert_close(run_optimlab(optimlab.Adagrad, **kwargs), ref_adagrad(P0, STEPS, **kwargs))


def test_eps_inside_sqrt_changes_adagrad_where_eps_is_large():
    a = run_optimlab(optimlab.Adagrad, lr=0.1, eps=0.5)
    b = run_optimlab(optimlab.Adagrad, lr=0.1, eps=0.5, eps_inside_sqrt=True)
    assert np.abs(a - b).max() > 1e-3


RMSPROP_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, alpha=0.9, weight_decay=0.1, momentum=0.8),
    dict(lr=0.01, centered=True),
    dict(lr=0.01, centered=True, momentum=0.5, eps_inside_sqrt=True),
    dict(lr=0.01, eps=1e-3, eps_inside_sqrt=True, maximize=True),
]


@pytest.mark.parametrize("kwargs", RMSPROP_CASES, ids=str)
def test_rmsprop_matches_reference(kwargs):
    assert_close(run_optimlab(optimlab.RMSprop, **kwargs), ref_rmsprop(P0, STEPS, **kwargs))


ADAM_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    dict(lr=0.01, amsgrad=True, maximize=True),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=0.01, bias_correction=False),
    dict(lr=0.01, bias_correction=False, amsgrad=True, weight_decay=0.05),
]


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_matches_reference(kwargs):
    assert_close(run_optimlab(optimlab.Adam, **kwargs), ref_adam(P0, STEPS, **kwargs))


def test_adamw_is_adam_with_decoupled_decay():
    got = run_optimlab(optimlab.AdamW, lr=0.01, weight_decay=0.2)
    assert_close(got, ref_adam(P0, STEPS, lr=0.01, weight_decay=0.2, decoupled_weight_decay=True))


NADAM_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, momentum_decay=0.01),
    dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
    dict(lr=0.01, momentum_schedule=False),
]


@pytest.mark.parametrize("kwargs", NADAM_CASES, ids=str)
def test_nadam_matches_reference(kwargs):
    # torch keeps the momentum product in a float32 0-dim tensor; set a float64 default to follow
    # the float64 reference exactly.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = run_optimlab(optimlab.NAdam, **kwargs)
    finally:
        torch.set_default_dtype(previous)
    assert_close(got, ref_nadam(P0, STEPS, **kwargs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_worked_example_adam_without_bias_correction(dtype):
    """Seed 001: weight 0.5, lr 1e-3, grad 0.2, betas (0.9, 0.999), eps 1e-8 -> 0.49684."""
    w = torch.tensor([0.5], dtype=dtype, requires_grad=True)
    opt = optimlab.Adam([w], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, bias_correction=False)
    w.grad = torch.tensor([0.2], dtype=dtype)
    opt.step()
    assert round(w.item(), 5) == 0.49684
    state = opt.state[w]
    assert state["exp_avg"].item() == pytest.approx(0.02)       # m_t = 0.1 * 0.2
    assert state["exp_avg_sq"].item() == pytest.approx(0.00004)  # v_t = 0.001 * 0.04


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_worked_example_with_bias_correction(dtype):
    w = torch.tensor([0.5], dtype=dtype, requires_grad=True)
    opt = optimlab.Adam([w], lr=1e-3)
    w.grad = torch.tensor([0.2], dtype=dtype)
    opt.step()
    assert round(w.item(), 5) == 0.499
