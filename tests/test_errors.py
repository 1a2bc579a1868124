"""Bad hyperparameters raise at construction, naming the argument and the allowed range, and a
bad value set later is caught before any parameter is touched."""

import math

import pytest
import torch
from torch import nn

import optimlab

P = lambda: [nn.Parameter(torch.ones(3))]  # noqa: E731

BAD = [
    (optimlab.SGD, dict(lr=-0.1), "lr", "[0, inf)"),
    (optimlab.SGD, dict(lr=math.nan), "lr", "nan"),
    (optimlab.SGD, dict(lr="fast"), "lr", "real number"),
    (optimlab.SGD, dict(momentum=-0.5), "momentum", "[0, inf)"),
    (optimlab.SGD, dict(momentum=1.0, momentum_form="ewma"), "momentum", "[0, 1)"),
    (optimlab.SGD, dict(weight_decay=-1), "weight_decay", "[0, inf)"),
    (optimlab.SGD, dict(dampening=1.5, momentum=0.9), "dampening", "[0, 1]"),
    (optimlab.SGD, dict(nesterov=True), "nesterov", "momentum > 0"),
    (optimlab.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov", "dampening = 0"),
    (optimlab.SGD, dict(momentum=0.9, dampening=0.1, momentum_form="ewma"), "dampening", "momentum_form"),
    (optimlab.SGD, dict(momentum_form="heavy"), "momentum_form", "'torch', 'ewma', 'lr_in_velocity'"),
    (optimlab.Adagrad, dict(eps=0.0), "eps", "(0, inf)"),
    (optimlab.Adagrad, dict(eps=-1e-8), "eps", "(0, inf)"),
    (optimlab.Adagrad, dict(lr_decay=-1), "lr_decay", "[0, inf)"),
    (optimlab.Adagrad, dict(initial_accumulator_value=-0.1), "initial_accumulator_value", "[0, inf)"),
    (optimlab.Adagrad, dict(eps_inside_sqrt="yes"), "eps_inside_sqrt", "True or False"),
    (optimlab.RMSprop, dict(alpha=1.0), "alpha", "[0, 1)"),
    (optimlab.RMSprop, dict(alpha=-0.1), "alpha", "[0, 1)"),
    (optimlab.RMSprop, dict(eps=0), "eps", "(0, inf)"),
    (optimlab.RMSprop, dict(momentum=-1), "momentum", "[0, inf)"),
    (optimlab.Adam, dict(betas=(1.0, 0.999)), "betas[0]", "[0, 1)"),
    (optimlab.Adam, dict(betas=(0.9, -0.1)), "betas[1]", "[0, 1)"),
    (optimlab.Adam, dict(betas=(0.9,)), "betas", "pair"),
    (optimlab.Adam, dict(eps=0.0), "eps", "(0, inf)"),
    (optimlab.Adam, dict(lr=-1e-3), "lr", "[0, inf)"),
    (optimlab.Adam, dict(weight_decay=-0.01), "weight_decay", "[0, inf)"),
    (optimlab.Adam, dict(lr=torch.tensor([0.1, 0.2])), "lr", "1-element"),
    (optimlab.AdamW, dict(betas=(0.9, 1.5)), "betas[1]", "[0, 1)"),
    (optimlab.NAdam, dict(momentum_decay=-1), "momentum_decay", "[0, inf)"),
    (optimlab.NAdam, dict(betas=(-0.1, 0.9)), "betas[0]", "[0, 1)"),
    (optimlab.Adam, dict(capturable=True), "capturable", "False"),
]


@pytest.mark.parametrize("cls,kwargs,name,allowed", BAD, ids=[f"{c.__name__}-{k}" for c, k, _, _ in BAD])
def test_bad_hyperparameter_raises_naming_argument_and_range(cls, kwargs, name, allowed):
    with pytest.raises((ValueError, TypeError)) as info:
        cls(P(), **kwargs)
    assert name in str(info.value)
    assert allowed in str(info.value)


@pytest.mark.parametrize("kwargs", [dict(fused=True, foreach=True), dict(fused=True, differentiable=True)])
def test_conflicting_execution_flags_raise_runtime_error_like_torch(kwargs):
    with pytest.raises(RuntimeError, match="at most one"):
        optimlab.Adam(P(), **kwargs)


def test_bad_param_group_is_rejected_and_not_kept():
    params = P()
    opt = optimlab.Adam(params, lr=0.01)
    with pytest.raises(ValueError, match="betas\\[0\\]"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], "betas": (2.0, 0.9)})
    assert len(opt.param_groups) == 1


def test_bad_value_set_later_leaves_every_parameter_untouched():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = optimlab.Adam([{"params": [a]}, {"params": [b]}], lr=0.1)
    for p in (a, b):
        p.grad = torch.ones(3)
    opt.step()
    before = [a.detach().clone(), b.detach().clone()]
    state_before = {k: v.clone() for k, v in opt.state[a].items()}
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr must be in"):
        opt.step()
    assert torch.equal(a, before[0]) and torch.equal(b, before[1])
    for k, v in state_before.items():
        assert torch.equal(opt.state[a][k], v)


def test_sparse_gradient_is_refused_before_any_update():
    dense, emb = nn.Parameter(torch.ones(3)), nn.Embedding(5, 2, sparse=True)
    opt = optimlab.Adam([dense, *emb.parameters()], lr=0.1)
    dense.grad = torch.ones(3)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert torch.equal(dense, torch.ones(3))


def test_tensor_lr_is_accepted_like_torch():
    p = nn.Parameter(torch.ones(2))
    opt = optimlab.SGD([p], lr=torch.tensor(0.5))
    p.grad = torch.ones(2)
    opt.step()
    assert torch.allclose(p, torch.full((2,), 0.5))
